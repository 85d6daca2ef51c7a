"""`python_transform` hooks: a team's own pandas function, run on the mapped rows.

A config names `"python_transform": "package.module:function"`. The function gets the
mapped, typed rows as a pandas DataFrame with Arrow-backed dtypes (exact decimals, dates,
`02134` as text), after the mapping and before dedupe and key checks, and returns a
DataFrame with exactly the mapping's target columns. refload then holds the result to the
mapping: the same columns, types castable without loss (Arrow's safe cast), `varchar(n)`
lengths, `nullable: false`, and the values mapped input may not hold either (a NUL in
text, NaN or infinity in a double). Anything else, or an exception in the hook, rejects the
file (exit 2) naming the function, the column and the value.

Hooks are code, so they are deployed with the image (the top-level `hooks/` package) or
found on `PYTHONPATH` locally; never read from the config bucket, which holds data that
more people may write. A hook is called once per piece of the file (a quarter chunk, or
a chunk when streamed), so it must be row-local: one row out for each row in, in the same
order (line numbers stay exact).

A hook has a time limit on each file (`python_transform_timeout_seconds`, default 300 s,
its calls on the file's pieces added up): past it the hook is stopped and the file rejected,
so a hook that sleeps or spins ends the run with a run_log row instead of running into the
function's timeout. It is stopped in process (ADR 17): SIGALRM on the main thread (where
Lambda, the CLI and a Spark worker call it), an exception set on the calling thread
elsewhere. A subprocess would need pickling both ways and multiprocessing's semaphores,
which Lambda lacks (no /dev/shm). A hook stuck inside one C call is stopped when it returns.

pandas is imported here only, for tables that have a hook: in the image it lives in a
separate folder (`REFLOAD_PANDAS_SITE`) put on `sys.path` only then, because pyarrow
imports pandas and numpy whenever they can be imported, and every other table would pay
for it (ADR 5).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import structlog

from steps.shared.errors import ConfigError, RejectedInput

if TYPE_CHECKING:
    import pyarrow as pa

    from steps.shared.mapping.sheet import Mapping

Hook = Callable[[Any], Any]
_loaded: dict[str, Hook] = {}
log = structlog.get_logger("refload.hooks")


class _TimedOut(BaseException):
    """Raised inside a hook past its time limit. A BaseException, as KeyboardInterrupt is:
    a hook's own `except Exception` must not swallow it."""


class TimeLimit:
    """The time a hook has left on one file: its calls on the file's pieces add up."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.left = seconds

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if self.left <= 0:
            raise _TimedOut
        start = time.monotonic()
        try:
            with _stopped_after(self.left):
                yield
        finally:
            self.left -= time.monotonic() - start


@contextlib.contextmanager
def _stopped_after(seconds: float) -> Iterator[None]:
    """Raise _TimedOut in this thread after `seconds`, and each second after that (a hook
    that catches it once is stopped the next time)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):
        with _async_stop_after(seconds):
            yield
        return

    def expire(_signum: int, _frame: Any) -> None:
        raise _TimedOut

    previous = signal.signal(signal.SIGALRM, expire)
    start = time.monotonic()
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)

    def disarm() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)

    try:
        yield
    finally:
        _to_the_end(disarm)
        if outer:  # someone else's alarm (a test runner's, a tracer's): theirs again
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 0.001))


def _to_the_end(cleanup: Callable[[], None]) -> None:
    """Run an idempotent `cleanup` to its end: a _TimedOut due just then (a signal already
    tripped, an exception already set) would otherwise skip its last steps and leave the
    alarm armed for whatever runs next."""
    while True:
        try:
            cleanup()
            return
        except _TimedOut:
            continue


@contextlib.contextmanager
def _async_stop_after(seconds: float) -> Iterator[None]:
    """Off the main thread no signal reaches the hook: a watchdog sets _TimedOut on the
    calling thread instead (raised at its next bytecode; a sleep ends first)."""
    target = ctypes.c_ulong(threading.get_ident())
    done = threading.Event()
    lock = threading.Lock()

    def watch() -> None:
        wait = seconds
        while not done.wait(wait):
            with lock:
                if not done.is_set():
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(target, ctypes.py_object(_TimedOut))
            wait = 1.0

    def disarm() -> None:
        with lock:
            done.set()
        ctypes.pythonapi.PyThreadState_SetAsyncExc(target, None)  # one set but not yet raised

    watchdog = threading.Thread(target=watch, name="refload-hook-limit", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        _to_the_end(disarm)
        watchdog.join()


class _PrintsToLog(io.TextIOBase):
    """A hook's stdout, one log record per line: stdout carries `--json`'s one object, and
    log records pass through the redaction."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            log.info("python_transform printed", python_transform=self.reference, text=line)
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.write("\n")


def _pandas() -> Any:
    site = os.environ.get("REFLOAD_PANDAS_SITE")
    if site and os.path.isdir(site) and site not in sys.path:
        sys.path.append(site)
    try:
        import pandas
    except ImportError:
        raise ConfigError(
            "python_transform needs pandas: pip install 'refload[pandas]' "
            "(the image has it under REFLOAD_PANDAS_SITE)"
        ) from None
    return pandas


def load(reference: str) -> Hook:
    """The function `package.module:function`, imported once per process."""
    if reference in _loaded:
        return _loaded[reference]
    _pandas()
    module_name, _, function_name = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"python_transform '{reference}': cannot import {module_name}: {error} "
            "(hooks ship in the image's hooks/ package, or on PYTHONPATH locally)"
        ) from None
    except Exception as error:  # a syntax error or a failing import in the team's module
        raise ConfigError(
            f"python_transform '{reference}': importing {module_name} failed: "
            f"{type(error).__name__}: {error}"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(
            f"python_transform '{reference}': {module_name} has no function {function_name}"
        )
    _loaded[reference] = function
    return function


def apply(
    reference: str, rows: pa.Table, mapping: Mapping, uri: str, lines: Any, limit: TimeLimit
) -> pa.Table:
    """Run the hook on `rows` (the mapped columns) and hold what it returns to the mapping.

    `lines(i)` gives the source line (or row) of the i-th row, to name it in errors; `limit`
    is the time the hook has left on this file.
    """
    import pyarrow as pa

    pd = _pandas()
    hook = load(reference)

    def reject(reason: str, **where: Any) -> RejectedInput:
        return RejectedInput(f"python_transform {reference}: {reason}", file=uri, **where)

    frame = rows.to_pandas(types_mapper=pd.ArrowDtype)
    printed = _PrintsToLog(reference)
    try:
        with limit.running(), contextlib.redirect_stdout(printed):
            result = hook(frame)
    except _TimedOut:
        raise reject(
            f"was stopped after {limit.seconds:g} s, its time limit on one file "
            "(python_transform_timeout_seconds)"
        ) from None
    except Exception as error:  # the team's code: its own message, named
        raise reject(f"raised {type(error).__name__}: {error}") from None
    finally:
        printed.flush()
    if not isinstance(result, pd.DataFrame):
        raise reject(f"returned {type(result).__name__}, not a pandas DataFrame")
    names = [str(c) for c in result.columns]
    targets = mapping.targets
    missing = [c for c in targets if c not in names]
    extra = [c for c in names if c not in targets]
    if missing or extra or len(set(names)) != len(names):
        raise reject(
            "returned columns that are not the mapping's target columns"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; extra: {', '.join(extra)}" if extra else ""),
            column=next(iter(missing + extra), None),
        )
    if len(result) != rows.num_rows:
        raise reject(
            f"returned {len(result)} row(s) for {rows.num_rows}: a hook must be row-local "
            "(one row out for each row in)"
        )
    try:
        returned = pa.Table.from_pandas(result[targets], preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise reject(f"returned values Arrow cannot hold: {error}") from None
    columns = [
        _checked(returned.column(spec.target), spec, reject, lines) for spec in mapping.columns
    ]
    return pa.Table.from_arrays(columns, names=targets)


def _checked(values: Any, spec: Any, reject: Callable[..., RejectedInput], lines: Any) -> Any:
    """One returned column as the mapping types it: a lossless cast, lengths, nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from steps.shared.mapping.casts import shown, unstorable

    wanted = spec.data_type.arrow()
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if values.type != wanted:
        try:
            cast = pc.cast(values, wanted, safe=True)
            if pa.types.is_floating(values.type):
                # Arrow's "safe" float -> decimal cast still rounds: 2/3 must not become 0.67.
                changed = pc.fill_null(pc.not_equal(pc.cast(cast, values.type), values), False)
                if pc.any(changed).as_py():
                    raise pa.ArrowInvalid("a value would be rounded")
            values = cast
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            index, value = _first_uncastable(values, wanted)
            raise reject(
                f"returned {values.type} where the mapping says {spec.data_type} ({error})",
                column=spec.target,
                value=value,
                **({"line": lines(index)} if index is not None else {}),
            ) from None
    refused = unstorable(values, spec)
    if refused:
        index, reason = refused[0]
        raise reject(
            f"returned a value that {reason}",
            column=spec.target,
            value=shown(values[index]),
            line=lines(index),
        )
    if spec.data_type.kind == "varchar":
        too_long = pc.fill_null(pc.greater(pc.binary_length(values), spec.data_type.length), False)
        if pc.any(too_long).as_py():
            index = pc.index(too_long, True).as_py()
            raise reject(
                f"returned a value longer than {spec.data_type}",
                column=spec.target,
                value=values[index].as_py(),
                line=lines(index),
            )
    if not spec.nullable and values.null_count:
        index = pc.index(pc.is_null(values), True).as_py()
        raise reject(
            "returned an empty value, and the column is not nullable",
            column=spec.target,
            line=lines(index),
        )
    return values


def _first_uncastable(values: Any, wanted: Any) -> tuple[int | None, Any]:
    """The first value that does not cast (error path only; looks at 100,000 at most)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for index in range(min(len(values), 100_000)):
        one = values.slice(index, 1)
        try:
            cast = pc.cast(one, wanted, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return index, one[0].as_py()
        if (
            pa.types.is_floating(one.type)
            and not pc.all(pc.fill_null(pc.equal(pc.cast(cast, one.type), one), True)).as_py()
        ):
            return index, one[0].as_py()
    return None, None
