"""What `init` infers per column: a target name, a type and format, nullability, `strip`,
and the primary key, each from every value and each checked with the cast `run` uses
(`steps.shared.mapping.casts.cast_values`). Only `handler.cli.commands.init.onboard` imports this.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from steps.shared.errors import ConfigError
from steps.shared.mapping.casts import (
    FALSE_WORDS,
    INTEGER_RANGES,
    TRUE_WORDS,
    DataType,
    cast_values,
)
from steps.shared.mapping.sheet import ColumnSpec
from steps.shared.mapping.transforms import Transform
from steps.shared.names import unknown_name

# Identifiers are cut to PostgreSQL's 63 bytes, the smallest limit of the warehouses.
MAX_NAME_BYTES = 63
VARCHAR_SIZES = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65535)
DATE_FORMATS = (
    "%Y-%m-%d",
    "%m/%d/%Y",
    "%d/%m/%Y",
    "%d.%m.%Y",
    "%Y/%m/%d",
    "%d-%m-%Y",
    "%m-%d-%Y",
    "%m/%d/%y",
    "%d/%m/%y",
    "%d.%m.%y",
    "%d %b %Y",
    "%b %d %Y",
)
TIME_PARTS = (" %H:%M:%S", "T%H:%M:%S", " %H:%M")
# What a strptime directive reads, as a pattern (other directives: one or two digits).
FORMAT_PARTS = {"%Y": r"\d{4}", "%y": r"\d{2}", "%b": "[A-Za-z]{3}"}
# The same dates read month-first or day-first: which one is right, the values decide.
SWAPPED = {"%m": "%d", "%d": "%m"}
# Names of columns whose digits are codes, not amounts: ISO 3166's numeric, a FIPS code.
DIGIT_CODE_NAME = re.compile(r"(^|_)(code|numeric|zip|postal|fips|iso|naics|sic|m49)(_|$)")
KEY_NAME = re.compile(r"(^|_)(id|code|key|iso|alpha_\d|abbrev|symbol)(_|$)")
INTEGER = r"^[+-]?\d+$"
DECIMAL = r"^[+-]?(\d+\.?\d*|\.\d+)$"
FLOAT = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


@dataclass
class ColumnGuess:
    source: str
    target: str
    data_type: DataType
    nullable: bool
    strip: bool
    format: str | None
    reason: str
    decimal_comma: bool = False

    def spec(self) -> ColumnSpec:
        transforms: tuple[Transform, ...] = (Transform("strip"),) if self.strip else ()
        if self.decimal_comma:
            transforms += (Transform("replace", (",", ".")),)
        return ColumnSpec(
            self.target, self.data_type, self.source, transforms, None, self.nullable, self.format
        )

    def sheet_row(self) -> list[str]:
        transforms = ["strip"] if self.strip else []
        if self.decimal_comma:
            transforms.append('replace(",",".")')  # quoted: the argument is a comma
        return [
            self.source,
            self.target,
            str(self.data_type),
            "|".join(transforms),
            "",
            "true" if self.nullable else "false",
            self.format or "",
        ]


def snake_case(header: str, position: int) -> str:
    """A header as a lower-case identifier: 'Alphabetic code' -> alphabetic_code."""
    text = unicodedata.normalize("NFKD", header).encode("ascii", "ignore").decode()
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower() or f"column_{position}"
    if text[0].isdigit():
        text = f"c_{text}"
    return text[:MAX_NAME_BYTES].rstrip("_")


def unique_names(headers: list[str]) -> list[str]:
    names: list[str] = []
    for position, header in enumerate(headers, 1):
        name = snake_case(header, position)
        base, n = name, 2
        while name in names:
            name = f"{base[: MAX_NAME_BYTES - len(str(n)) - 1]}_{n}"
            n += 1
        names.append(name)
    return names


def _fits(values: pa.Array, data_type: DataType, format: str | None = None) -> bool:
    return not cast_values(values, ColumnSpec("c", data_type, "c", format=format))[1]


def _same_width(values: pa.Array) -> bool:
    bounds = pc.min_max(pc.binary_length(values))
    return bool(bounds["min"].as_py() == bounds["max"].as_py())


def _varchar(values: pa.Array, longest: int) -> tuple[DataType, str]:
    """A code keeps its exact width: two values or more, every one as long, none with a
    space (ISO 'AFN', '008'). Other text gets room to grow: twice its longest value, 32
    at least, rounded up to a power of two (one sample's 6-byte note is not the limit)."""
    if len(pc.unique(values)) > 1 and _same_width(values) and _all_match(values, r"^\S+$"):
        return DataType("varchar", length=longest), f"fixed width {longest} byte(s)"
    wanted = max(2 * longest, 32)
    length = next((s for s in VARCHAR_SIZES if s >= wanted), 65535)
    return DataType("varchar", length=length), f"longest {longest} byte(s), room for twice that"


def _all_match(values: pa.Array, pattern: str) -> bool:
    return bool(pc.all(pc.match_substring_regex(values, pattern)).as_py())


def _example(values: pa.Array, mask: pa.Array) -> str:
    return str(values.filter(mask)[0].as_py())


def _format_regex(fmt: str) -> str:
    """The whole value a strptime format reads: Arrow's strptime ignores trailing text,
    so '2024-01-05 10:00' would otherwise fit '%Y-%m-%d' and lose its time."""
    parts = re.split(r"(%[A-Za-z])", fmt)
    return (
        "^"
        + "".join(
            FORMAT_PARTS.get(p, r"\d{1,2}") if p.startswith("%") and len(p) == 2 else re.escape(p)
            for p in parts
        )
        + "$"
    )


def _date_type(
    values: pa.Array, warnings: list[str], target: str
) -> tuple[DataType, str | None, str] | None:
    """date or timestamp with the format every value has, if one fits them all."""
    if not _all_match(values, r"^\d{1,4}[-/. ]|^[A-Za-z]{3} \d"):
        return None
    # Excel writes dates as midnight timestamps: still dates.
    midnight = _all_match(values, r"[ T]00:00(:00)?$")
    tried = [(DataType("date"), f) for f in DATE_FORMATS] + [
        (DataType("date" if midnight else "timestamp"), f + t)
        for f in DATE_FORMATS
        for t in TIME_PARTS
    ]
    fitting = [f for t, f in tried if _all_match(values, _format_regex(f)) and _fits(values, t, f)]
    kinds = dict((f, t) for t, f in tried)
    if not fitting:
        if _fits(values, DataType("timestamp")):
            return DataType("timestamp"), None, "ISO 8601 timestamps"
        return None
    fmt = fitting[0]
    midnight_note = " (times are all midnight)" if "%H" in fmt and midnight else ""
    swapped = re.sub(r"%[md]", lambda m: SWAPPED[m.group()], fmt)
    if swapped in kinds and swapped != fmt:
        wrong = pc.is_null(pc.strptime(values, format=swapped, unit="us", error_is_null=True))
        if pc.any(wrong).as_py():
            why = f"every value fits {fmt}, not {swapped} ({_example(values, wrong)!r})"
            return kinds[fmt], fmt, why + midnight_note
        warnings.append(
            f"{target}: ambiguous dates: every value fits {fmt} and {swapped} (no day above "
            f"12); chose {fmt}, edit 'format' in the mapping sheet if the days come first"
        )
        return kinds[fmt], fmt, f"every value fits {fmt} and {swapped}: ambiguous, chose {fmt}"
    return kinds[fmt], fmt, f"every value fits {fmt}{midnight_note}"


def _number_type(
    values: pa.Array, longest: int, target: str, quoted: bool
) -> tuple[DataType, str | None, str] | None:
    if _all_match(values, INTEGER):
        zeros = pc.match_substring_regex(values, r"^[+-]?0\d")
        if pc.any(zeros).as_py():
            example = _example(values, zeros)
            return _varchar(values, longest)[0], None, f"code with leading zeros ({example!r})"
        # '262' beside '048': a code whose next file may bring a leading zero.
        coded = "written as JSON strings" if quoted else ""
        if not coded and DIGIT_CODE_NAME.search(target):
            coded = "named like a code"
        if coded and _same_width(values) and _all_match(values, r"^\d+$"):
            return DataType("varchar", length=longest), None, f"fixed-width digits {coded}"
        try:
            bounds = pc.min_max(pc.cast(values, pa.int64()))
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # '+5', or beyond int64
            numbers = [int(v) for v in pc.unique(values).to_pylist()]
            low, high = min(numbers), max(numbers)
        for kind, bound in INTEGER_RANGES.items():
            if -bound <= low and high < bound:
                return DataType(kind), None, f"whole numbers from {low} to {high}"  # type: ignore[arg-type]
        return _varchar(values, longest)[0], None, "digits, too many for bigint"
    if _all_match(values, DECIMAL):
        texts = [str(v).lstrip("+-") for v in pc.unique(values).to_pylist()]
        digits = max(len(t.partition(".")[0].lstrip("0")) for t in texts) or 1
        scale = max(len(t.partition(".")[2]) for t in texts)
        data_type = DataType("decimal", precision=digits + scale, scale=scale)
        if digits + scale <= 38 and _fits(values, data_type):
            why = f"decimals, up to {digits} digit(s) before the point and {scale} after"
            return data_type, None, why
    if _all_match(values, FLOAT) and _fits(values, DataType("double")):
        return DataType("double"), None, "numbers with exponents or over 38 digits"
    return None


def _guess_type(
    values: pa.Array, warnings: list[str], target: str, quoted: bool
) -> tuple[DataType, str | None, str]:
    """(type, format, why) for non-null stripped text values."""
    longest = int(pc.max(pc.binary_length(values)).as_py())
    distinct = pc.unique(values)
    words = {str(v).lower() for v in distinct.to_pylist()} if len(distinct) <= 10 else set()
    if words and words <= {*TRUE_WORDS, *FALSE_WORDS} and not words <= {"0", "1"}:
        return DataType("boolean"), None, f"only {', '.join(sorted(words))}"
    guessed = _number_type(values, longest, target, quoted) or _date_type(values, warnings, target)
    if guessed:
        data_type, fmt, why = guessed
    else:
        mixed = _all_match(values, r"^[0-9A-Za-z]+$") and _all_match(values, r"\d")
        data_type, fmt, why = None, None, "digits and letters" if mixed else "text"
    if data_type is None or data_type.kind == "varchar":
        data_type, width = _varchar(values, longest)
        why += f", {width}"
    return data_type, fmt, why


def _decimal_comma(values: pa.Array) -> bool:
    """Numbers written 12,5: a comma before other than three digits (1,234 may be a
    thousand)."""
    if not _all_match(values, r"^[+-]?\d+(,\d+)?$"):
        return False
    return bool(pc.any(pc.match_substring_regex(values, r",(\d{1,2}|\d{4,})$")).as_py())


def guess_column(
    source: str, target: str, raw: pa.Array, warnings: list[str], quoted: bool = False
) -> ColumnGuess:
    """`quoted`: the file wrote every value as a string (JSON), digits included."""
    raw = raw.cast(pa.string())
    trimmed = pc.utf8_trim_whitespace(raw)
    # What the pipeline's blank_to_null leaves after `strip`, computed once on trimmed text.
    values = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
    strip = bool(pc.any(pc.and_(pc.is_valid(values), pc.not_equal(trimmed, raw))).as_py())
    present = values.drop_null()
    nulls = len(values) - len(present)
    notes = ["padded values: strip"] if strip else []
    notes.append(f"{nulls:,} empty" if nulls else "never empty")
    decimal_comma = bool(len(present)) and _decimal_comma(present)
    if decimal_comma:
        present = pc.replace_substring(present, ",", ".")
        notes.append('decimal commas: replace(",",".")')
    if not len(present):
        # Nothing to size it by: room for a line of text.
        data_type, fmt, why = DataType("varchar", length=256), None, "every value is empty"
    else:
        data_type, fmt, why = _guess_type(present, warnings, target, quoted)
    reason = "; ".join([why, *notes])
    return ColumnGuess(source, target, data_type, bool(nulls), strip, fmt, reason, decimal_comma)


# --- primary key ---------------------------------------------------------------------


def _width(guess: ColumnGuess, column: pa.ChunkedArray) -> int:
    if guess.data_type.kind in ("string", "varchar"):
        return int(pc.max(pc.binary_length(column)).as_py() or 0)
    try:
        return max(1, column.type.bit_width // 8)
    except ValueError:  # not fixed width
        return 16


def _rank(names: list[str], guesses: dict[str, ColumnGuess], typed: pa.Table) -> tuple[int, int]:
    keyish = any(KEY_NAME.search(n) for n in names)
    return (0 if keyish else 1, sum(_width(guesses[n], typed.column(n)) for n in names))


def _unique(typed: pa.Table, names: list[str]) -> bool:
    if any(typed.column(n).null_count for n in names):
        return False
    return typed.select(names).group_by(names).aggregate([]).num_rows == typed.num_rows


# Where a sample row is: (unit, function from row positions to line or row numbers).
Locate = tuple[str, Callable[[list[int]], list[int]]]
KEY_REPEATS_SHOWN = 3  # repeated key values a refused --primary-key names


def _key_problem(rows: pa.Table, key: list[str], locate: Locate | None) -> str:
    """What run would refuse in the sample: the first empty key, else the repeated key
    values (exact duplicate rows aside: run drops them) with their lines."""
    position = "__position"
    rows = rows.append_column(position, pa.array(range(rows.num_rows), pa.int64()))
    for name in key:
        empty = pc.indices_nonzero(pc.is_null(rows.column(name))).to_pylist()
        if empty:
            return f"{name} is empty on {_places(empty[:1], locate)}"
    others = [n for n in rows.column_names if n != position]
    firsts = rows.group_by(others).aggregate([(position, "min")])  # exact duplicates once
    repeats = (
        firsts.group_by(key)
        .aggregate([(f"{position}_min", "list"), (f"{position}_min", "count")])
        .filter(pc.greater(pc.field(f"{position}_min_count"), 1))
    )
    found = sorted(
        zip(*(repeats.column(n).to_pylist() for n in [*key, f"{position}_min_list"]), strict=True),
        key=lambda r: min(r[-1]),
    )
    shown = [
        f"{', '.join(f'{k}={_shown(v)}' for k, v in zip(key, r[:-1], strict=True))} on "
        f"{_places(sorted(r[-1])[:5], locate)}"
        for r in found[:KEY_REPEATS_SHOWN]
    ]
    more = len(found) - len(shown)
    return "repeated key " + "; ".join(shown) + (f"; and {more:,} more" if more > 0 else "")


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _places(positions: list[int], locate: Locate | None) -> str:
    """`lines 4, 6` as the file numbers them; data rows counted from 1 when the file can no
    longer be read (an s3:// sample is gone once read)."""
    unit, numbers = "data row", [p + 1 for p in positions]
    if locate is not None:
        with contextlib.suppress(Exception):  # the downloaded copy is removed: data rows
            unit, numbers = locate[0], locate[1](positions)
    return f"{unit}{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}"


def propose_key(
    typed: pa.Table,
    guesses: list[ColumnGuess],
    wanted: list[str] | None,
    rows: pa.Table | None = None,
    locate: Locate | None = None,
) -> tuple[list[str], str]:
    """A key for the table: `wanted` (--primary-key) if the sample holds it, else the best
    unique, never-empty column or pair. `typed` is the sample's distinct rows; `rows` every
    row in file order and `locate` where they are, to name a refused key's lines."""
    by_name = {g.target: g for g in guesses}
    if wanted is not None:
        by_source = {g.source: g.target for g in guesses}
        key = []
        for name in wanted:
            if name not in by_name and name not in by_source:
                raise ConfigError(f"--primary-key: {unknown_name('column', name, by_name)}")
            key.append(by_name[name].target if name in by_name else by_source[name])
        if not _unique(typed, key):
            problem = _key_problem(rows if rows is not None else typed, key, locate)
            raise ConfigError(
                f"--primary-key {','.join(key)}: {problem}; run would reject this file, "
                "so choose other columns"
            )
        return key, "given with --primary-key"
    candidates = [g.target for g in guesses if not g.nullable]
    singles = [[n] for n in candidates if _unique(typed, [n])]
    narrow = sorted(candidates, key=lambda n: _rank([n], by_name, typed))[:12]
    pairs = [[a, b] for i, a in enumerate(narrow) for b in narrow[i + 1 :]]
    found = singles or [p for p in pairs if _unique(typed, p)]
    if not found:
        return [], "no column or pair of columns is unique and never empty"
    key = min(found, key=lambda names: _rank(names, by_name, typed))
    others = [", ".join(k) for k in found if k != key][:3]
    why = "unique and never empty" + (
        ", named like a key" if _rank(key, by_name, typed)[0] == 0 else ""
    )
    why += f", narrowest ({_rank(key, by_name, typed)[1]} byte(s))"
    return key, why + (f"; also unique: {'; '.join(others)}" if others else "")
