"""Mapping sheets: one row per target column, parsed once into typed specs.

Parsing (this module's top half) is light; applying a mapping to data uses
pyarrow and is imported only by ingest.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from steps.shared.errors import ConfigError
from steps.shared.names import identifier_problem, unknown_name

if TYPE_CHECKING:
    import pyarrow as pa


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
PLACEHOLDERS = ("{load_date}", "{run_id}", "{source_key}")
# The `format` of a double column that keeps NaN and infinities (refused otherwise).
ALLOW_NAN_INF = "allow_nan_inf"
SHEET_COLUMNS = (
    "source_column",
    "target_column",
    "data_type",
    "transform",
    "default",
    "nullable",
    "format",
)
REQUIRED_SHEET_COLUMNS = ("target_column", "data_type")


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


@dataclass(frozen=True)
class Transform:
    name: str
    args: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.name}({','.join(self.args)})" if self.args else self.name


@dataclass(frozen=True)
class ColumnSpec:
    target: str
    data_type: DataType
    source: str | None = None
    transforms: tuple[Transform, ...] = ()
    default: str | None = None
    nullable: bool = True
    format: str | None = None
    sheet_row: int = 0

    @property
    def derived(self) -> bool:
        return self.source is None


@dataclass(frozen=True)
class Mapping:
    uri: str
    columns: tuple[ColumnSpec, ...] = field(default_factory=tuple)

    @property
    def targets(self) -> list[str]:
        return [c.target for c in self.columns]

    @property
    def sources(self) -> list[str]:
        return [c.source for c in self.columns if c.source is not None]


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


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on `separator` outside quotes and parentheses."""
    parts: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(arg: str) -> str:
    arg = arg.strip()
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "\"'":
        return arg[1:-1]
    return arg


def _regex_problem(pattern: str, replacement: str) -> str | None:
    """Checked by the engine that will run it: Arrow's RE2, which (unlike Python's `re`)
    has no lookaround and no backreferences in the pattern."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.replace_substring_regex(pa.array([""]), pattern=pattern, replacement=replacement)
    except pa.ArrowInvalid as error:
        return (
            str(error).removeprefix("internal error: ").removeprefix("Invalid regular expression: ")
        )
    return None


def _zfill_problem(args: tuple[str, ...]) -> str | None:
    return None if args[0].isdigit() else f"zfill needs a whole number, got '{args[0]}'"


def _regex_replace_problem(args: tuple[str, ...]) -> str | None:
    problem = _regex_problem(*args)
    return f"regex_replace pattern '{args[0]}' is invalid: {problem}" if problem else None


def _kernel(name: str) -> Callable[[pa.Array, tuple[str, ...]], pa.Array]:
    """A one-argument pyarrow.compute function (imported when a file is mapped)."""

    def apply(values: pa.Array, args: tuple[str, ...]) -> pa.Array:
        import pyarrow.compute as pc

        return getattr(pc, name)(values)

    return apply


def _replace(values: pa.Array, args: tuple[str, ...]) -> pa.Array:
    import pyarrow.compute as pc

    return pc.replace_substring(values, pattern=args[0], replacement=args[1])


def _regex_replace(values: pa.Array, args: tuple[str, ...]) -> pa.Array:
    import pyarrow.compute as pc

    return pc.replace_substring_regex(values, pattern=args[0], replacement=args[1])


def _zfill(values: pa.Array, args: tuple[str, ...]) -> pa.Array:
    return zfill(values, int(args[0]))


def _nullif(values: pa.Array, args: tuple[str, ...]) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.if_else(pc.equal(values, args[0]), pa.scalar(None, pa.string()), values)


@dataclass(frozen=True)
class TransformSpec:
    """A mapping-sheet transform: its argument count, a check of its arguments when the
    sheet is read, and what it does to a column of text (pandas' `Series.str` meaning)."""

    arity: int
    apply: Callable[[pa.Array, tuple[str, ...]], pa.Array]
    check: Callable[[tuple[str, ...]], str | None] | None = None


# The one registry of transforms: the sheet parser, the runtime and the docs test use it.
TRANSFORMS: dict[str, TransformSpec] = {
    "strip": TransformSpec(0, _kernel("utf8_trim_whitespace")),
    "upper": TransformSpec(0, _kernel("utf8_upper")),
    "lower": TransformSpec(0, _kernel("utf8_lower")),
    "title": TransformSpec(0, _kernel("utf8_title")),
    "zfill": TransformSpec(1, _zfill, _zfill_problem),
    "replace": TransformSpec(2, _replace),
    "regex_replace": TransformSpec(2, _regex_replace, _regex_replace_problem),
    "nullif": TransformSpec(1, _nullif),
}


def parse_transforms(text: str) -> tuple[Transform, ...]:
    transforms = []
    for part in _split_top_level(text, "|"):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r"([a-z_]+)\s*(?:\((.*)\))?", part, flags=re.S)
        if not match:
            raise ValueError(f"cannot read transform '{part}'")
        name, arg_text = match.groups()
        spec = TRANSFORMS.get(name)
        if spec is None:
            raise ValueError(unknown_name("transform", name, TRANSFORMS))
        args = tuple(_unquote(a) for a in _split_top_level(arg_text, ",")) if arg_text else ()
        if len(args) != spec.arity:
            raise ValueError(f"transform '{name}' takes {spec.arity} argument(s), got {len(args)}")
        problem = spec.check(args) if spec.check else None
        if problem:
            raise ValueError(problem)
        transforms.append(Transform(name, args))
    return tuple(transforms)


def _sheet_cell(value: Any) -> str:
    """A mapping-sheet cell as the text it means ("" for empty; 5.0 -> "5"). Source cells
    are read differently (steps.ingest.sources keeps None for empty and rejects error cells)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _sheet_rows(data: bytes, uri: str) -> list[list[str]]:
    if uri.lower().endswith((".xlsx", ".xlsm", ".xls", ".ods")):
        from python_calamine import CalamineWorkbook

        from steps.shared.io.workbook import oversized_sheets

        try:
            book = CalamineWorkbook.from_filelike(io.BytesIO(data))
        except Exception as error:
            raise ConfigError(f"cannot read the mapping workbook: {error}", file=uri) from None
        too_large = oversized_sheets(data, list(book.sheet_names)[:1])
        if too_large:
            raise ConfigError(too_large, file=uri)
        try:
            sheet = book.get_sheet_by_index(0)
            rows = sheet.to_python(skip_empty_area=False)
        except Exception as error:
            raise ConfigError(f"cannot read the mapping workbook: {error}", file=uri) from None
        return [[_sheet_cell(v) for v in row] for row in rows]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"mapping sheet is not UTF-8: {error}", file=uri) from None
    return [[c.strip() for c in row] for row in csv.reader(io.StringIO(text))]


def parse_sheet(data: bytes, uri: str) -> Mapping:
    """Parse a mapping sheet; every error names the sheet, its row and column."""
    rows = _sheet_rows(data, uri)
    if not rows or not any(rows[0]):
        raise ConfigError("mapping sheet is empty", file=uri)
    header = [h.strip().lower() for h in rows[0]]
    for name in header:
        if name and name not in SHEET_COLUMNS:
            # Quote only what reads as a column name: the file may be anything at all.
            reason = (
                unknown_name("mapping sheet column", name, SHEET_COLUMNS)
                if re.fullmatch(r"[a-z0-9_ ]{1,64}", name)
                else "row 1 is not a mapping sheet header; the columns are: "
                + ", ".join(SHEET_COLUMNS)
            )
            raise ConfigError(reason, file=uri, row=1)
    for name in REQUIRED_SHEET_COLUMNS:
        if name not in header:
            raise ConfigError(f"mapping sheet has no '{name}' column", file=uri, row=1)
    columns: list[ColumnSpec] = []
    for number, row in enumerate(rows[1:], start=2):
        cells = {name: (row[i] if i < len(row) else "") for i, name in enumerate(header) if name}
        if not any(cells.values()):
            continue
        columns.append(_parse_sheet_row(cells, uri, number))
    if not columns:
        raise ConfigError("mapping sheet has no column rows", file=uri)
    seen: dict[str, int] = {}
    for spec in columns:
        if spec.target in seen:
            raise ConfigError(
                f"target_column '{spec.target}' appears twice (also row {seen[spec.target]})",
                file=uri,
                row=spec.sheet_row,
                column="target_column",
            )
        seen[spec.target] = spec.sheet_row
    return Mapping(uri, tuple(columns))


def _parse_sheet_row(cells: dict[str, str], uri: str, number: int) -> ColumnSpec:
    def fail(column: str, reason: str) -> ConfigError:
        return ConfigError(reason, file=uri, row=number, column=column, value=cells.get(column))

    target = cells.get("target_column", "")
    if not target:
        raise fail("target_column", "target_column is empty")
    problem = identifier_problem(target)
    if problem:
        raise fail("target_column", problem)
    try:
        data_type = parse_data_type(cells.get("data_type", ""))
    except ValueError as error:
        raise fail("data_type", str(error)) from None
    try:
        transforms = parse_transforms(cells.get("transform", ""))
    except ValueError as error:
        raise fail("transform", str(error)) from None
    nullable_text = cells.get("nullable", "").lower()
    if nullable_text not in ("", *TRUE_WORDS, *FALSE_WORDS):
        raise fail("nullable", "nullable must be true or false")
    spec = ColumnSpec(
        target=target,
        data_type=data_type,
        source=cells.get("source_column") or None,
        transforms=transforms,
        default=cells.get("default") or None,
        nullable=nullable_text not in FALSE_WORDS,
        format=cells.get("format") or None,
        sheet_row=number,
    )
    if spec.derived and spec.default is None:
        raise fail("default", "a derived column (no source_column) needs a default")
    if spec.format and data_type.kind == "double" and spec.format != ALLOW_NAN_INF:
        raise fail("format", f"the only format of a double column is '{ALLOW_NAN_INF}'")
    if spec.format and data_type.kind not in ("date", "timestamp", "double"):
        raise fail(
            "format", f"format applies to date, timestamp and double columns, not {data_type}"
        )
    if spec.default is not None and not any(p in spec.default for p in PLACEHOLDERS):
        rejected = cast_values([spec.default], spec)[1]
        if rejected:
            raise fail("default", f"default does not fit {data_type}: {rejected[0][1]}")
    return spec


# --- what a type and a transform do to values (pyarrow) ---------------------------
# (Applying a whole mapping to a table, a thread per column: steps.ingest.transform.)


def apply_transforms(values: pa.Array, transforms: tuple[Transform, ...]) -> pa.Array:
    for t in transforms:
        values = TRANSFORMS[t.name].apply(values, t.args)
    return values


def zfill(values: pa.Array, width: int) -> pa.Array:
    """pandas' `str.zfill`: zeros go after a leading sign ('-12' -> '-0012', not '00-12')."""
    import pyarrow.compute as pc

    padded = pc.utf8_lpad(values, width=width, padding="0")
    signed = pc.or_(pc.starts_with(values, "-"), pc.starts_with(values, "+"))
    if not pc.any(signed).as_py():
        return padded
    sign = pc.utf8_slice_codeunits(values, 0, 1)
    digits = pc.utf8_lpad(pc.utf8_slice_codeunits(values, 1), width=max(width - 1, 0), padding="0")
    return pc.if_else(signed, pc.binary_join_element_wise(sign, digits, ""), padded)


def blank_to_null(values: pa.Array) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    # Empty or only whitespace; cheaper than comparing a trimmed copy with "".
    blank = pc.or_(pc.equal(pc.binary_length(values), 0), pc.utf8_is_space(values))
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
                value = dt.date.fromisoformat(stripped)
            elif kind == "timestamp":
                if not _TIMESTAMP_TEXT.fullmatch(stripped):
                    raise ValueError
                value = dt.datetime.fromisoformat(stripped)
                if value.tzinfo is not None:  # stored as UTC, never with the offset dropped
                    value = value.astimezone(dt.UTC).replace(tzinfo=None)
        except (ValueError, ArithmeticError):
            value, reason = None, f"is not a valid {spec.data_type}"
        if reason:
            failures.append((i, reason))
        out.append(value)
    return pa.array(out, target), failures
