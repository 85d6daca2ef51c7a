"""Names that come from configs and sheets: suggestions and identifier checks."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

# Lower-case only: Redshift folds unquoted identifiers to lower case, so a
# mixed-case name would mean different tables on different warehouses.
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_IDENTIFIER_BYTES = 127


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' or '', for appending to an error message."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> str:
    """The message for an unknown name: the name, a suggestion, the known ones."""
    known = sorted(known)
    if not known:  # not "known: " and nothing after it
        return f"unknown {kind} '{name}'; none is defined"
    return f"unknown {kind} '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}"


def identifier_problem(name: str) -> str | None:
    """Why `name` is not a safe warehouse identifier, or None when it is."""
    if len(name.encode()) > MAX_IDENTIFIER_BYTES:
        return f"identifier {name!r} is longer than {MAX_IDENTIFIER_BYTES} bytes"
    if IDENTIFIER.fullmatch(name):  # not match(): "$" also matches before a final newline
        return None
    hint = ""
    lowered = re.sub(r"[^a-z0-9_]", "_", name.strip().lower())
    if lowered and IDENTIFIER.fullmatch(lowered):
        hint = f" (did you mean '{lowered}'?)"
    return (
        f"identifier {name!r} must be lower-case letters, digits and underscores, "
        f"not starting with a digit{hint}"
    )
