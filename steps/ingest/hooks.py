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

pandas is imported here only, for tables that have a hook: in the image it lives in a
separate folder (`REFLOAD_PANDAS_SITE`) put on `sys.path` only then, because pyarrow
imports pandas and numpy whenever they can be imported, and every other table would pay
for it (ADR 5).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from steps.errors import ConfigError, RejectedInput

if TYPE_CHECKING:
    import pyarrow as pa

    from steps.mapping import Mapping

Hook = Callable[[Any], Any]
_loaded: dict[str, Hook] = {}


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


def apply(reference: str, rows: pa.Table, mapping: Mapping, uri: str, lines: Any) -> pa.Table:
    """Run the hook on `rows` (the mapped columns) and hold what it returns to the mapping.

    `lines(i)` gives the source line (or row) of the i-th row, to name it in errors.
    """
    import pyarrow as pa

    pd = _pandas()
    hook = load(reference)

    def reject(reason: str, **where: Any) -> RejectedInput:
        return RejectedInput(f"python_transform {reference}: {reason}", file=uri, **where)

    frame = rows.to_pandas(types_mapper=pd.ArrowDtype)
    try:
        result = hook(frame)
    except Exception as error:  # the team's code: its own message, named
        raise reject(f"raised {type(error).__name__}: {error}") from None
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

    from steps.mapping import unstorable

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
            value=values[index].as_py(),
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
