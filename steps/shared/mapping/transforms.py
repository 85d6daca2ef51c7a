"""Mapping-sheet transforms: the one registry `TRANSFORMS` (a `TransformSpec` per name:
arity, kernel, argument check), parsing a sheet's transform cell, and applying it. Kernels
use pyarrow, imported when a file is mapped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from steps.shared.names import unknown_name

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class Transform:
    name: str
    args: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.name}({','.join(self.args)})" if self.args else self.name


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
