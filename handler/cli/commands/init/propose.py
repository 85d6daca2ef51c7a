"""Quality tests proposed from a sample's profile: what `init` writes into a new config and
`check --suggest` prints for an existing one (issue #33; docs/data-quality.md,
"Proposed tests"). Each is a plain `quality_tests` entry the user may delete, and each
passes on the rows it was proposed from: they are the typed rows `run` would load.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

ACCEPTED_VALUES_MAX = 20  # a column with at most this many distinct values gets a list
ROW_COUNT_MARGIN_PCT = 10  # row_count_between: the sample's count, 10% either way
LONGEST_SHAPE = 32  # longer codes are not codes: no regex
# A character's class in a code's shape, and the POSIX bracket each class is written as
# (PostgreSQL, Redshift and DuckDB read these alike; no \d, which POSIX ERE lacks).
CLASSES = {"9": "0-9", "A": "A-Z", "a": "a-z"}
SPECIAL = set(".^$*+?()[]{}|\\")


def _class(char: str) -> str:
    if char.isascii() and char.isdigit():
        return "9"
    if char.isascii() and char.isalpha():
        return "A" if char.isupper() else "a"
    return char


def code_pattern(values: list[str], width: int | None) -> str | None:
    """`^[A-Z]{2}$` for codes of one fixed shape: two values or more, each as long as the
    column's varchar(`width`) (init makes a code's width exact and gives free text room),
    each position a digit, a letter (by case) or the same punctuation in all of them."""
    if width is None or len(values) < 2 or not 0 < width <= LONGEST_SHAPE:
        return None
    if any(len(v) != width for v in values):
        return None
    positions: list[set[str]] = [set() for _ in range(width)]
    for value in values:
        for i, char in enumerate(value):
            positions[i].add(_class(char))
    parts: list[str] = []
    for found in positions:
        literal = [c for c in found if c not in CLASSES]
        if literal and (len(found) > 1 or literal[0].isspace()):
            return None  # punctuation that moves, or a space: not a code
        if literal:
            parts.append(f"\\{literal[0]}" if literal[0] in SPECIAL else literal[0])
        else:
            parts.append("[" + "".join(CLASSES[c] for c in sorted(found)) + "]")
    if all(not p.startswith("[") for p in parts):
        return None  # one value only: accepted_values says it better
    runs: list[tuple[str, int]] = []
    for part in parts:
        if runs and runs[-1][0] == part and part.startswith("["):
            runs[-1] = (part, runs[-1][1] + 1)
        else:
            runs.append((part, 1))
    return "^" + "".join(p if n == 1 else f"{p}{{{n}}}" for p, n in runs) + "$"


def propose_checks(
    rows: pa.Table, key: list[str], required: list[str], widths: dict[str, int | None]
) -> list[dict[str, Any]]:
    """The proposals for typed rows (exact duplicates already dropped, as run drops them):
    uniqueness for the key, not_null for the key and the never-empty columns,
    row_count_between around their count, accepted_values for a column of at most 20
    values that repeat (three rows a value on average), regex for fixed-shape text codes.
    `widths`: each varchar column's length."""
    count = rows.num_rows
    proposals: list[dict[str, Any]] = []
    if key:
        proposals.append({"type": "uniqueness", "columns": key})
    not_null = [*key, *(c for c in required if c not in key)]
    if not_null:
        proposals.append({"type": "not_null", "columns": not_null})
    margin = -(-count * ROW_COUNT_MARGIN_PCT // 100)  # rounded up, in integers
    proposals.append({"type": "row_count_between", "min": count - margin, "max": count + margin})
    for name in rows.column_names:
        column = rows.column(name)
        text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
        if not (text or pa.types.is_integer(column.type)):
            continue  # dates, numbers with decimals, booleans: a list or a shape says little
        present = column.drop_null()
        distinct = pc.unique(present).to_pylist()
        # A list, not a sample's few words: each value three times on average.
        repeats = 0 < len(distinct) <= ACCEPTED_VALUES_MAX and len(present) >= 3 * len(distinct)
        if repeats and name not in key:
            values = sorted(distinct)
            proposals.append({"type": "accepted_values", "column": name, "values": values})
            continue
        pattern = code_pattern([str(v) for v in distinct], widths.get(name)) if text else None
        if pattern:
            proposals.append({"type": "regex", "column": name, "pattern": pattern})
    return proposals


def _covered(proposal: dict[str, Any], existing: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What of a proposal the config's tests do not already check (None: all of it)."""
    kind = proposal["type"]
    same = [t for t in existing if t.get("type") == kind]
    if kind == "row_count_between":
        return None if same else proposal
    if kind == "uniqueness":
        wanted = set(proposal["columns"])
        return None if any(set(t["columns"]) == wanted for t in same) else proposal
    if kind == "not_null":
        checked = {c for t in same for c in t["columns"]}
        left = [c for c in proposal["columns"] if c not in checked]
        return {**proposal, "columns": left} if left else None
    return None if any(t.get("column") == proposal["column"] for t in same) else proposal


def new_proposals(
    proposals: list[dict[str, Any]], existing: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The proposals a config does not have yet (`check --suggest`)."""
    return [p for p in (_covered(p, existing) for p in proposals) if p is not None]


def suggest(config_path: str, source: str) -> list[dict[str, Any]]:
    """`check --suggest`: the proposals for `source` read as the config reads it (the rows
    `run` would publish, from a scratch curated root) that its quality_tests lack."""
    import tempfile

    import pyarrow.parquet as pq

    from steps import ingest
    from steps.shared.config.model import read_config
    from steps.shared.config.table import load_table_config
    from steps.shared.errors import RejectedInput
    from steps.shared.io import storage

    spec = load_table_config(config_path)
    raw, _ = read_config(config_path)
    with tempfile.TemporaryDirectory(prefix="refload-suggest-") as root:
        try:
            result = ingest.ingest_spec(
                spec, {"source": source, "run_id": "suggest", "curated_root": root}
            )
        except RejectedInput as error:
            if error.note and error.details.get("rejects_uri"):
                # The rejects file is in the scratch folder, gone on return: point to preview.
                error.details.pop("rejects_uri")
                counted = error.note.rpartition("; ")[0]
                error.note = (
                    f"{counted}; `python -m handler preview --config {config_path} "
                    f"--source {source}` lists every problem"
                )
            raise
        parts = storage.curated_parts(result["curated_uri"])
        rows = pa.concat_tables(pq.read_table(part) for part in parts)
    # A derived column (`{load_date}`, ...) is the run's, not the vendor's: nothing to test.
    mapped = [c for c in spec.mapping.columns if not c.derived and c.target in rows.column_names]
    rows = rows.select([c.target for c in mapped])
    required = [c.target for c in mapped if not c.nullable]
    widths = {c.target: c.data_type.length for c in mapped}
    proposals = propose_checks(rows, list(spec.config.primary_key), required, widths)
    return new_proposals(proposals, list(raw.get("quality_tests") or []))


def print_suggestions(
    config_path: str, source: str, proposals: list[dict[str, Any]], *, as_json: bool
) -> None:
    import json

    if as_json:
        print(json.dumps({"config": config_path, "source": source, "proposed": proposals}))
        return
    if not proposals:
        print(f"{config_path}: its quality_tests already check all that {source} suggests")
        return
    print(
        f"{config_path}: {len(proposals)} test(s) proposed from {source}; add the ones you "
        "want to quality_tests:"
    )
    for proposal in proposals:
        print(f"  {json.dumps(proposal)},")


def described(proposal: dict[str, Any]) -> str:
    """One proposal on one line, as init lists them: `regex zip ^[0-9]{5}$`."""
    kind = proposal["type"]
    if kind == "row_count_between":
        return f"{kind} {proposal['min']:,}..{proposal['max']:,}"
    if "columns" in proposal:
        return f"{kind} {', '.join(proposal['columns'])}"
    detail = proposal.get("pattern") or ", ".join(map(str, proposal.get("values", [])))
    return f"{kind} {proposal['column']} {detail}"
