"""The type system of a mapping sheet: the data types (`DataType`, `parse_data_type`) and
what a type does to text (`cast_values`, `unstorable`, `blank_to_null`), naming each value
that does not fit. Parsing a type is light; casting uses pyarrow, imported when a file is
mapped (steps.ingest).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from steps.shared.names import unknown_name

if TYPE_CHECKING:
    import pyarrow as pa

    from steps.shared.mapping.sheet import ColumnSpec


TypeKind = Literal[
    "string",
    "varchar",
    "smallint",
    "integer",
    "bigint",
    "decimal",
    "double",
    "boolean",
    "date",
    "timestamp",
]
TYPE_KINDS: tuple[str, ...] = TypeKind.__args__  # type: ignore[attr-defined]
INTEGER_RANGES = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}
TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")
# The `format` of a double column that keeps NaN and infinities (refused otherwise).
ALLOW_NAN_INF = "allow_nan_inf"
# The calendar every tool reading a curated file shares: Python's (years 1 to 9999), as
# days and microseconds from 1970-01-01. Arrow parses year 0, and a UTC offset moves
# 0001-01-01 00:30+01:00 into it; PostgreSQL would store that as a BC date.
_DAYS = (-719_162, 2_932_896)
_MICROSECONDS = (-62_135_596_800_000_000, 253_402_300_799_999_999)
OUTSIDE_CALENDAR = "is outside years 1 to 9999 (in UTC), which not every tool can read"


@dataclass(frozen=True)
class DataType:
    kind: TypeKind
    length: int | None = None
    precision: int | None = None
    scale: int | None = None

    def __str__(self) -> str:
        if self.kind == "varchar":
            return f"varchar({self.length})"
        if self.kind == "decimal":
            return f"decimal({self.precision},{self.scale})"
        return self.kind

    def arrow(self) -> pa.DataType:
        import pyarrow as pa

        return {
            "string": pa.string,
            "varchar": pa.string,
            "smallint": pa.int16,
            "integer": pa.int32,
            "bigint": pa.int64,
            "double": pa.float64,
            "boolean": pa.bool_,
            "date": pa.date32,
            "timestamp": lambda: pa.timestamp("us"),
            "decimal": lambda: pa.decimal128(self.precision, self.scale),
        }[self.kind]()


_TYPE_PATTERN = re.compile(r"^\s*([a-z_]+)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$")


def parse_data_type(text: str) -> DataType:
    match = _TYPE_PATTERN.match(text.lower())
    if not match:
        raise ValueError(f"cannot read data type '{text}'; known: {', '.join(TYPE_KINDS)}")
    kind, first, second = match.groups()
    if kind not in TYPE_KINDS:
        raise ValueError(unknown_name("data type", kind, TYPE_KINDS))
    if kind == "varchar":
        if first is None or second is not None or not 1 <= int(first) <= 65535:
            raise ValueError("varchar needs one length from 1 to 65535: varchar(n)")
        return DataType("varchar", length=int(first))
    if kind == "decimal":
        precision, scale = int(first or 18), int(second or 0)
        if not 1 <= precision <= 38 or not 0 <= scale <= precision:
            raise ValueError("decimal(p,s) needs 1 <= p <= 38 and 0 <= s <= p")
        return DataType("decimal", precision=precision, scale=scale)
    if first is not None:
        raise ValueError(f"data type '{kind}' takes no size")
    return DataType(kind)  # type: ignore[arg-type]


def blank_to_null(values: pa.Array) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    # Empty or only whitespace; cheaper than comparing a trimmed copy with "".
    blank = pc.or_(pc.equal(pc.binary_length(values), 0), pc.utf8_is_space(values))
    if not pc.any(blank).as_py():  # most columns: no copy of every value
        return values
    return pc.if_else(blank, pa.scalar(None, pa.string()), values)


def cast_values(values: Any, spec: ColumnSpec) -> tuple[pa.Array, list[tuple[int, str]]]:
    """Cast text to the column's type. Returns the array and (index, reason) per failure.

    The whole column is cast at once with pyarrow; only when that fails is each
    value parsed on its own, to name the rows that are wrong.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pa.array(values, pa.string()) if not isinstance(values, pa.Array) else values
    kind = spec.data_type.kind
    if kind in ("string", "varchar"):
        failures = _with_nul(values)
        if kind == "varchar":
            too_long = pc.greater(pc.binary_length(values), spec.data_type.length)
            for i in pc.indices_nonzero(pc.fill_null(too_long, False)).to_pylist():
                size = len(values[i].as_py().encode())
                failures.append((i, f"is {size} bytes, longer than {spec.data_type}"))
        return values, failures
    if kind == "boolean":
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(values))
        is_true = pc.is_in(lowered, pa.array(TRUE_WORDS))
        is_false = pc.is_in(lowered, pa.array(FALSE_WORDS))
        bad = pc.and_(pc.is_valid(values), pc.invert(pc.or_(is_true, is_false)))
        failures = [
            (i, "is not a boolean (true/false, yes/no, 1/0)")
            for i in pc.indices_nonzero(bad).to_pylist()
        ]
        result = pc.if_else(is_true, True, pc.if_else(is_false, False, pa.scalar(None, pa.bool_())))
        return result, failures
    if kind in ("date", "timestamp") and spec.format:
        parsed = pc.strptime(values, format=spec.format, unit="us", error_is_null=True)
        bad = pc.and_(pc.is_valid(values), pc.is_null(parsed))
        failures = [
            (i, f"does not match format '{spec.format}'")
            for i in pc.indices_nonzero(bad).to_pylist()
        ]
        impossible = _impossible_dates(values, parsed, spec.format)
        failures += [(i, f"is not a real {kind} (format '{spec.format}')") for i in impossible]
        loose = _loosely_parsed(values, parsed, spec.format, kind, set(impossible))
        failures += loose
        impossible += [i for i, _ in loose]
        outside = [i for i, _ in _outside_calendar(parsed)]
        failures += [(i, OUTSIDE_CALENDAR) for i in outside]
        impossible += outside
        if impossible:
            parsed = pc.if_else(
                _mask(len(values), impossible), pa.scalar(None, parsed.type), parsed
            )
        return (pc.cast(parsed, pa.date32()) if kind == "date" else parsed), failures
    target = spec.data_type.arrow()
    try:
        cast = pc.cast(values, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        cast = None
    if cast is None and kind == "timestamp":
        # When every value carries a UTC offset, Arrow converts them all to UTC at once.
        with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cast = pc.cast(pc.cast(values, pa.timestamp("us", "UTC")), target)
    if cast is None:
        return _cast_one_by_one(values.to_pylist(), spec, target)
    if kind == "double" and spec.format != ALLOW_NAN_INF:
        return cast, _non_finite(cast)
    if kind in ("date", "timestamp"):
        beyond = _outside_calendar(cast)
        if beyond:
            mask = _mask(len(cast), [i for i, _ in beyond])
            return pc.if_else(mask, pa.scalar(None, cast.type), cast), beyond
    return cast, []


def unstorable(values: pa.Array, spec: ColumnSpec) -> list[tuple[int, str]]:
    """Typed values refused as cast_values refuses them in text: a NUL character in text,
    NaN or an infinity in a double without format 'allow_nan_inf'. A hook's output is held
    to the same rules (steps.ingest.hooks)."""
    kind = spec.data_type.kind
    if kind in ("string", "varchar"):
        return _with_nul(values)
    if kind == "double" and spec.format != ALLOW_NAN_INF:
        return _non_finite(values)
    if kind in ("date", "timestamp"):
        return _outside_calendar(values)
    return []


def _mask(length: int, indices: list[int]) -> pa.Array:
    import pyarrow as pa

    flags = [False] * length
    for i in indices:
        flags[i] = True
    return pa.array(flags, pa.bool_())


def _with_nul(values: pa.Array) -> list[tuple[int, str]]:
    """Rows holding a NUL character, which PostgreSQL and Redshift cannot store: refused on
    every warehouse alike."""
    import pyarrow.compute as pc

    found = pc.match_substring(values, "\x00")
    if not pc.any(found).as_py():
        return []
    return [
        (i, "contains a NUL character (\\x00), which warehouses cannot store as text")
        for i in pc.indices_nonzero(pc.fill_null(found, False)).to_pylist()
    ]


def _non_finite(cast: pa.Array) -> list[tuple[int, str]]:
    import pyarrow.compute as pc

    bad = pc.invert(pc.fill_null(pc.is_finite(cast), True))
    return [
        (i, f"is NaN or infinite as a double; set format '{ALLOW_NAN_INF}' to keep such values")
        for i in pc.indices_nonzero(bad).to_pylist()
    ]


def shown(value: pa.Scalar) -> Any:
    """A value for a message: as Python holds it, else as Arrow writes it (a date or time
    outside years 1 to 9999, which Python cannot hold)."""
    import pyarrow as pa

    try:
        return value.as_py()
    except (OverflowError, ValueError):
        return value.cast(pa.string()).as_py()


def _outside_calendar(values: pa.Array) -> list[tuple[int, str]]:
    """Dates and timestamps before year 1 or after year 9999."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_date32(values.type):
        counts, (low, high) = values.view(pa.int32()), _DAYS
    elif pa.types.is_timestamp(values.type) and values.type.unit == "us":
        counts, (low, high) = values.view(pa.int64()), _MICROSECONDS
    else:  # no other unit is made here
        return []
    outside = pc.or_(pc.less(counts, low), pc.greater(counts, high))
    if not pc.any(outside).as_py():
        return []
    return [(i, OUTSIDE_CALENDAR) for i in pc.indices_nonzero(outside).to_pylist()]


def _after_30_day_months() -> Any:
    import pyarrow as pa

    return pa.array([5, 7, 10, 12], pa.int64())


def _rolled_into(parsed: pa.Array) -> pa.Array:
    """Days an impossible one rolls into: March 1-3, or the 1st after a 30-day month."""
    import pyarrow.compute as pc

    day, month = pc.day(parsed), pc.month(parsed)
    return pc.or_(
        pc.and_(pc.equal(month, 3), pc.less_equal(day, 3)),
        pc.and_(pc.is_in(month, value_set=_after_30_day_months()), pc.equal(day, 1)),
    )


def _impossible_dates(values: pa.Array, parsed: pa.Array, fmt: str) -> list[int]:
    """Rows whose day does not exist in its month (02/30/2024, 04/31, 02/29/2023).

    Arrow's strptime rolls such a day into the next month (02/29-31 -> March 1-3; the
    31st of April, June, September, November -> the 1st of the next), so its result is then
    one of those days that, formatted back, is not the text. Only those few rows are
    formatted back, and only a mismatch is parsed again, strictly, by Python.
    """
    import datetime as dt

    import pyarrow as pa
    import pyarrow.compute as pc

    rolled = _rolled_into(parsed)
    if getattr(parsed.type, "tz", None):
        # Parsed with its offset (%z), the day is UTC's: the text's own day (04/31 20:00-05:00
        # rolls into May 1, which is May 2 in UTC) may be the one before or after.
        for days in (-1, 1):
            shifted = pc.add(parsed, pa.scalar(dt.timedelta(days=days)))
            rolled = pc.or_(rolled, _rolled_into(shifted))
    early = pc.indices_nonzero(pc.fill_null(rolled, False))
    if not len(early):
        return []
    texts = values.take(early)
    differ = pc.fill_null(pc.not_equal(pc.strftime(parsed.take(early), format=fmt), texts), False)
    impossible = []
    for i in pc.indices_nonzero(differ).to_pylist():
        try:
            dt.datetime.strptime(texts[i].as_py(), fmt)
        except ValueError:
            impossible.append(early[i].as_py())
    return impossible


# What the one-by-one casts accept: only what Arrow's own cast reads. Python's int(),
# float(), Decimal() and fromisoformat() are looser: they take "1_000", digits of any
# script ("١٢٣") and ISO week dates ("2024-W01-1"), which Arrow refuses.
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_NUMBER_TEXT = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)",
    re.IGNORECASE,
)
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIMESTAMP_TEXT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}(?::[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?)?)?"
    r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)


# Directives Arrow's strptime reads more loosely than their definition: %y takes one
# digit ("1/2/4" is 2004), %j takes 366 in a common year (and lands in another year).
LOOSE_DIRECTIVES = ("%y", "%j")


def _loosely_parsed(
    values: pa.Array, parsed: pa.Array, fmt: str, kind: str, known: set[int]
) -> list[tuple[int, str]]:
    """Rows Arrow parsed with a loose directive that Python's strict strptime refuses, as
    (index, reason), less the `known` ones. Only rows that do not format back to their own
    text (unpadded numbers, or those loose readings) are parsed again, one by one."""
    import datetime as dt
    import time

    import pyarrow.compute as pc

    if not any(directive in fmt for directive in LOOSE_DIRECTIVES):
        return []
    differ = pc.fill_null(pc.not_equal(pc.strftime(parsed, format=fmt), values), False)
    found = []
    for i in pc.indices_nonzero(differ).to_pylist():
        if i in known:
            continue
        text = values[i].as_py()
        try:
            strict = time.strptime(text, fmt)
        except ValueError:
            found.append((i, f"does not match format '{fmt}'"))
            continue
        day = dt.date(strict.tm_year, strict.tm_mon, strict.tm_mday)
        if "%j" in fmt and day.timetuple().tm_yday != strict.tm_yday:  # 366 in a common year
            found.append((i, f"is not a real {kind} (format '{fmt}')"))
    return found


def _cast_one_by_one(
    texts: list[str | None], spec: ColumnSpec, target: pa.DataType
) -> tuple[pa.Array, list[tuple[int, str]]]:
    import datetime as dt
    import decimal
    import math

    import pyarrow as pa

    kind = spec.data_type.kind
    out: list[Any] = []
    failures: list[tuple[int, str]] = []
    for i, text in enumerate(texts):
        if text is None:
            out.append(None)
            continue
        value: Any = None
        reason = ""
        stripped = text.strip()
        try:
            if kind in INTEGER_RANGES:
                if not _INTEGER_TEXT.fullmatch(stripped):
                    raise ValueError
                value = int(stripped)
                bound = INTEGER_RANGES[kind]
                if not -bound <= value < bound:
                    value, reason = None, f"is out of range for {kind}"
            elif kind == "double":
                if not _NUMBER_TEXT.fullmatch(stripped):
                    raise ValueError
                value = float(stripped)
                if not math.isfinite(value) and spec.format != ALLOW_NAN_INF:
                    value, reason = None, _non_finite(pa.array([value]))[0][1]
            elif kind == "decimal":
                scale = spec.data_type.scale or 0
                if not _NUMBER_TEXT.fullmatch(stripped):
                    raise ValueError
                number = decimal.Decimal(stripped)
                if not number.is_finite():
                    raise ValueError
                # The default context holds 28 digits; decimal(38,s) needs 38 (and more to
                # count the digits of a value that is too long).
                with decimal.localcontext(prec=80):
                    value = number.quantize(
                        decimal.Decimal(1).scaleb(-scale), decimal.ROUND_HALF_UP
                    )
                if len(value.as_tuple().digits) > (spec.data_type.precision or 18):
                    value, reason = None, f"has more digits than {spec.data_type}"
            elif kind == "date":
                if not _DATE_TEXT.fullmatch(stripped):
                    raise ValueError
                if stripped.startswith("0000"):
                    raise OverflowError
                value = dt.date.fromisoformat(stripped)
            elif kind == "timestamp":
                if not _TIMESTAMP_TEXT.fullmatch(stripped):
                    raise ValueError
                if stripped.startswith("0000"):
                    raise OverflowError
                value = dt.datetime.fromisoformat(stripped)
                if value.tzinfo is not None:  # stored as UTC, never with the offset dropped
                    value = value.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:  # year 0, or an offset that moves a value past year 1 or 9999
            value, reason = None, OUTSIDE_CALENDAR
        except (ValueError, ArithmeticError):
            value, reason = None, f"is not a valid {spec.data_type}"
        if reason:
            failures.append((i, reason))
        out.append(value)
    return pa.array(out, target), failures
