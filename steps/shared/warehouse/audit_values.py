"""Values as the etl_audit columns hold them: bounded text, JSON that stays valid."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from steps.shared.errors import truncate_bytes
from steps.shared.io.secrets import redact, redact_value

# What an audit column holds, in bytes: Redshift's VARCHAR(n) counts bytes, PostgreSQL's
# characters, so a byte bound fits both.
SHORT_TEXT_BYTES = 1024
LONG_TEXT_BYTES = 65535


def _naive(value: Any) -> dt.datetime:
    """A timestamp as the ledger's TIMESTAMP columns hold it: UTC without a zone (drivers
    may hand back an ISO string or an aware value)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    assert isinstance(value, dt.datetime)
    return value


def _samples_json(samples: dict[str, list[dict[str, Any]]]) -> str:
    text = json.dumps(samples, default=str)
    if len(text) > 65_000:  # the column's limit: keys only
        text = json.dumps({k: [{"key": s["key"]} for s in v] for k, v in samples.items()})
    if len(text) > 65_000:
        # Keys too wide even alone: no samples rather than JSON cut mid-document, which
        # every reader of the ledger row (validate's changes_within) would fail to parse.
        text = json.dumps({k: [] for k in samples})
    return text


def _text(value: Any, max_bytes: int) -> str | None:
    return None if value is None else truncate_bytes(redact(str(value)), max_bytes)


def _shorten_strings(value: Any, max_bytes: int) -> Any:
    if isinstance(value, str):
        return truncate_bytes(value, max_bytes)
    if isinstance(value, dict):
        return {k: _shorten_strings(v, max_bytes) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shorten_strings(v, max_bytes) for v in value]
    return value


def audit_json(details: Any, long_text: tuple[str, str] | None = None) -> str:
    """JSON for an audit `details` column: credentials masked, long values cut, and at most
    LONG_TEXT_BYTES, still valid JSON (with a visible marker where anything was cut).

    `long_text` (key, text): one top-level value kept in the room the others leave."""
    value = _shorten_strings(redact_value(json.loads(json.dumps(details, default=str))), 1024)
    if long_text and isinstance(value, dict):
        key, full = long_text[0], redact(long_text[1])
        value.pop(key, None)
        room = LONG_TEXT_BYTES - len(json.dumps(value, ensure_ascii=False).encode()) - 16
        room -= len(json.dumps(key, ensure_ascii=False).encode())
        kept, limit = truncate_bytes(full, room), room
        while len(json.dumps(kept, ensure_ascii=False).encode()) > room:
            # JSON escapes (quotes, control characters) make the text longer: cut more.
            encoded = len(json.dumps(kept, ensure_ascii=False).encode())
            limit = limit * room // encoded - 64
            kept = truncate_bytes(full, max(limit, 0))
            if limit <= 0:
                break
        value[key] = kept
    text = json.dumps(value, ensure_ascii=False)
    size = len(text.encode())
    head_bytes = LONG_TEXT_BYTES // 2  # the head is a JSON string: escaping may double it
    while size > LONG_TEXT_BYTES:
        cut = {"truncated": f"…(truncated, {size} bytes)", "head": text[:head_bytes]}
        text = json.dumps(cut, ensure_ascii=False)
        size, head_bytes = len(text.encode()), head_bytes // 2
    return text
