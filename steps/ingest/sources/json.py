"""JSON: JSON Lines, an array of objects, or one object whose only key holds that array;
a key given twice in an object is refused rather than the last value kept."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from steps.ingest.sources.base import (
    FormatSpec,
    SourceTable,
    _apply_null_values,
    _in_memory,
    _json_text,
)
from steps.ingest.sources.encodings import (
    _decode,
    _decode_wide,
    _is_utf8,
    bomless_utf16,
    wide_encoding,
)
from steps.shared.errors import RejectedInput, at

if TYPE_CHECKING:
    from steps.shared.config.model import TableConfig

JSON_SHAPES = (
    "expected JSON Lines (one object per line), an array of objects, or one object whose "
    "only key holds that array"
)


class _RepeatedKeys:
    """json's object_pairs_hook: builds each object as json would, and notes the objects
    given a key twice (json silently keeps the last value)."""

    def __init__(self) -> None:
        self.found: list[tuple[dict[str, Any], str]] = []

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        built = dict(pairs)
        if len(built) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.found.append((built, key))
                    break
                seen.add(key)
        return built


def _holds(value: Any, wanted: dict[str, Any]) -> bool:
    """`wanted` is `value` or nested in it (the same object, not an equal one)."""
    if value is wanted:
        return True
    if isinstance(value, dict):
        return any(_holds(child, wanted) for child in value.values())
    return isinstance(value, list) and any(_holds(child, wanted) for child in value)


def _refuse_repeated_key(
    repeated: _RepeatedKeys, records: list[Any], labels: list[int], uri: str, unit: str
) -> None:
    """The first record holding an object with a key twice, named with that key."""
    if not repeated.found:
        return
    inner, key = repeated.found[0]  # objects complete in file order, so this is the first
    for label, record in zip(labels, records, strict=True):
        if _holds(record, inner):
            top = record is inner
            raise RejectedInput(
                f"{'record' if top else 'an object in the record'} has the key '{key}' twice; "
                "refused rather than keep only the last value",
                file=uri,
                column=key if top else None,
                **at(unit, label),
            )
    raise RejectedInput(f"the document has the key '{key}' twice", file=uri)


def _json_document(text: str, uri: str) -> list[Any] | None:
    """The records of a file that is one JSON document: an array, or an array wrapped in
    an object with one key ({"data": [...]}). None for JSON Lines."""
    stripped = text.lstrip()
    repeated = _RepeatedKeys()
    if stripped.startswith("["):
        try:
            records: list[Any] = json.loads(text, object_pairs_hook=repeated)
        except json.JSONDecodeError as error:
            raise RejectedInput(
                f"not valid JSON: {error.msg}", file=uri, line=error.lineno
            ) from None
        if isinstance(records, list):
            _refuse_repeated_key(repeated, records, list(range(1, len(records) + 1)), uri, "row")
        return records
    if not stripped.startswith("{"):
        return None
    try:
        document = json.loads(text, object_pairs_hook=repeated)
    except json.JSONDecodeError:
        return None  # JSON Lines (or broken: the line-by-line read names the line)
    if len(document) == 1:
        [(_, inner)] = document.items()
        if isinstance(inner, list) and all(isinstance(r, dict) for r in inner):
            _refuse_repeated_key(repeated, inner, list(range(1, len(inner) + 1)), uri, "row")
            return inner
    if len(stripped.rstrip().splitlines()) == 1:
        return None  # a single JSON Lines record
    keys = ", ".join(f"'{k}'" for k in list(document)[:10])
    raise RejectedInput(f"is one JSON object with keys {keys}; {JSON_SHAPES}", file=uri)


def read_json(data: bytes, uri: str, config: TableConfig) -> SourceTable:
    wide = wide_encoding(data[:4], config.encoding)
    if wide:
        text = _decode_wide(data, uri, wide)
    else:
        text = _decode(data, uri, "utf-8-sig" if _is_utf8(config.encoding) else config.encoding)
    document = _json_document(text, uri)
    records: list[Any]
    if document is not None:
        records = document
        labels = list(range(1, len(records) + 1))
        unit = "row"
    else:
        records, labels = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            repeated = _RepeatedKeys()
            try:
                record = json.loads(line, object_pairs_hook=repeated)
            except json.JSONDecodeError as error:
                raise RejectedInput(
                    f"not valid JSON: {error.msg}; {JSON_SHAPES}", file=uri, line=number
                ) from None
            _refuse_repeated_key(repeated, [record], [number], uri, "line")
            records.append(record)
            labels.append(number)
        unit = "line"
    columns: dict[str, None] = {}
    for label, record in zip(labels, records, strict=True):
        if not isinstance(record, dict):
            raise RejectedInput(
                f"expected a JSON object, found {type(record).__name__}",
                file=uri,
                **at(unit, label),
            )
        columns.update(dict.fromkeys(record))
    table = pa.table(
        {
            name: pa.array([_json_text(r.get(name)) for r in records], pa.string())
            for name in columns
        }
    )
    table = _apply_null_values(table, config.null_values)
    source = _in_memory(uri, table, unit, lambda ps: [labels[p] for p in ps])
    source.quoted_columns = frozenset(
        name
        for name in columns
        if all(isinstance(r[name], str) for r in records if r.get(name) is not None)
    )
    return source


def sniff(head: bytes, kind: str | None) -> str | None:
    """'json' for text whose first character opens an object or an array."""
    if kind:
        return None
    wide = wide_encoding(head) or bomless_utf16(head)
    text = head[:64].decode(wide, "ignore").encode() if wide else head
    return "json" if text.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"[") else None


FORMAT = FormatSpec(
    extensions={".json": "json", ".jsonl": "jsonl", ".ndjson": "ndjson"},
    read=read_json,
    text=True,
    sniff=sniff,
    layout_keys=("encoding",),
)
