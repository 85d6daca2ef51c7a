"""A vendor renamed a column: which new header column is the missing mapped one.

The evidence is the values. "Known values" for a mapped column come from the table's
newest curated file (`<curated_root>/<table_name>/*.parquet`): ingest writes it on a
laptop and on Lambda alike, it holds each target column as the sheet typed it, and it
is read only when a file is already being refused, so a passing run pays nothing. A new
column's values are typed by the missing column's own sheet row (transforms, cast) and
counted where they are among the known ones; name similarity breaks ties, and is the
only evidence when no curated file holds the column yet. `init --update` reuses this.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from steps.shared.mapping.casts import blank_to_null, cast_values
from steps.shared.mapping.transforms import apply_transforms

if TYPE_CHECKING:
    import pyarrow as pa

    from steps.ingest.sources import SourceTable
    from steps.shared.config.table import TableSpec
    from steps.shared.mapping.sheet import ColumnSpec

# How the readers name a column whose header cell is blank: never a rename's candidate.
BLANK_HEADER = re.compile(r"\(unnamed \d+\)")

# A new column is a candidate when at least this share of its values are known ones.
MIN_SHARE = 0.5
# Without known values, a name at least this similar (difflib ratio) is still named.
MIN_NAME_RATIO = 0.6


@dataclass(frozen=True)
class Candidate:
    missing: str  # the mapped source column the header lost
    new: str  # the header column that takes its place
    matched: int  # rows of the new column whose value is a known one
    compared: int  # rows of the new column with a value
    known: bool  # False: no earlier values to compare, named by its name alone
    name_ratio: float

    def evidence(self) -> str:
        if self.known:
            return (
                f"column '{self.missing}' is missing; new column '{self.new}' matches its "
                f"values in {self.matched:,} of {self.compared:,} rows"
            )
        return (
            f"column '{self.missing}' is missing; new column '{self.new}' has the closest "
            "name (no earlier curated file to compare its values with)"
        )


def name_ratio(a: str, b: str) -> float:
    def norm(text: str) -> str:
        return re.sub(r"[^0-9a-z]", "", text.lower())

    return difflib.SequenceMatcher(None, norm(a), norm(b)).ratio()


def _typed_text(values: pa.Array, spec: ColumnSpec) -> pa.Array:
    """The values as the missing column's sheet row would load them, as text (a value its
    cast refuses is null): comparable with the curated column whatever its type."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = blank_to_null(apply_transforms(values.cast(pa.string()), spec.transforms))
    cast, failures = cast_values(text, spec)
    if failures:  # per value: the refused ones become null
        keep = [True] * len(text)
        for i, _ in failures:
            keep[i] = False
        cast = pc.if_else(pa.array(keep), cast, pa.scalar(None, cast.type))
    return pc.cast(cast, pa.string())


def match_renames(
    missing: list[ColumnSpec],
    new: dict[str, pa.Array],
    known: dict[str, pa.Array],
) -> list[Candidate]:
    """One candidate per missing column at most, each new column used once: the pairs with
    the largest share of known values first, name similarity breaking ties. `new`: each
    unmapped header column's text values; `known`: a target column's earlier values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    scored: list[tuple[tuple[float, float], Candidate]] = []
    for spec in missing:
        assert spec.source is not None  # a missing column is a mapped source
        earlier = known.get(spec.target)
        for name, values in new.items():
            ratio = name_ratio(spec.source, name)
            typed = _typed_text(values, spec)
            present = typed.drop_null()
            if earlier is None:
                # Named by its name alone, and only if every value fits the column's type.
                fits = len(present) == len(blank_to_null(values.cast(pa.string())).drop_null())
                if ratio >= MIN_NAME_RATIO and fits and len(present):
                    found = Candidate(spec.source, name, 0, len(present), False, ratio)
                    scored.append(((0.0, ratio), found))
                continue
            if not len(present):
                continue
            earlier_text = pc.unique(pc.cast(earlier, pa.string()).drop_null())
            matched = int(pc.sum(pc.is_in(present, earlier_text)).as_py() or 0)
            share = matched / len(present)
            if share >= MIN_SHARE:
                found = Candidate(spec.source, name, matched, len(present), True, ratio)
                scored.append(((share, ratio), found))
    chosen: list[Candidate] = []
    for _, candidate in sorted(scored, key=lambda pair: pair[0], reverse=True):
        if all(c.missing != candidate.missing and c.new != candidate.new for c in chosen):
            chosen.append(candidate)
    order = [s.source for s in missing]
    return sorted(chosen, key=lambda c: order.index(c.missing))


def curated_values(curated_root: str, table: str, targets: list[str]) -> dict[str, pa.Array]:
    """The target columns' values in the table's newest curated file (those it has); none
    when no curated file is there yet or it cannot be read (the message then goes by
    names)."""
    import pyarrow.parquet as pq

    from steps.shared.errors import RefloadError
    from steps.shared.io import storage

    try:
        newest = storage.newest_uri(storage.join(curated_root, table), ".parquet")
        if newest is None:
            return {}
        with storage.local_file(newest) as path:
            names = [n for n in pq.read_schema(path).names if n in targets]
            columns = pq.read_table(path, columns=names)
    except (RefloadError, OSError, ValueError):  # a hint's source: never the error itself
        return {}
    return {n: columns.column(n).combine_chunks() for n in names}


def rename_message(
    missing: list[ColumnSpec], unmapped: list[str], candidates: list[Candidate]
) -> str:
    """Each missing column with its candidate and evidence, then the new columns that
    match none (a rename plus a new column names both)."""
    by_missing = {c.missing: c for c in candidates}
    parts = [
        by_missing[s.source].evidence()
        if s.source in by_missing
        else f"column '{s.source}' is missing and no new column matches its values"
        for s in missing
    ]
    taken = {c.new for c in candidates}
    parts += [f"new column '{n}' matches no missing column" for n in unmapped if n not in taken]
    return "; ".join(parts)


def renamed_columns(source: SourceTable, spec: TableSpec, curated_root: str) -> str | None:
    """The message for a file whose header lost mapped columns and gained unmapped ones
    that match them, or None. Reads the file's first chunk (the file is refused anyway)."""
    header = source.column_names
    missing = [c for c in spec.mapping.columns if c.source is not None and c.source not in header]
    mapped = set(spec.mapping.sources)
    unmapped = [n for n in header if n not in mapped and not BLANK_HEADER.fullmatch(n)]
    if not missing or not unmapped:
        return None
    from steps.shared.errors import RefloadError

    try:
        first = next(iter(source.chunks), None)
    except RefloadError:  # a bad first chunk: the plain message, not this hint, is the answer
        return None
    if first is None:
        return None
    new = {n: first.column(n).combine_chunks() for n in unmapped}
    known = curated_values(curated_root, spec.config.table_name, [c.target for c in missing])
    candidates = match_renames(missing, new, known)
    # No candidate: the plain "not in the header" message says all there is.
    return rename_message(missing, unmapped, candidates) if candidates else None
