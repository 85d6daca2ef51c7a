"""Events in, step payloads out: step payloads, S3 notifications, EventBridge events.

A landed object names no table; the table is found by routing its key
through the configs' `source_prefix` (see steps.config.route_key).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from typing import Any
from urllib.parse import unquote_plus

from steps.errors import ConfigError
from steps.names import unknown_name

DEFAULT_CONFIG_ROOT = "configs"
# What each step needs in its payload; anything else it derives or defaults.
REQUIRED_KEYS = {
    "ingest": ("config", "source"),
    "load": ("config", "curated_uri", "content_hash"),
    "validate": ("config",),
    "notify": (),
    "freshness": (),
}


def new_run_id() -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def config_root() -> str:
    return os.environ.get("REFLOAD_CONFIG_ROOT", DEFAULT_CONFIG_ROOT)


def _landed_object(event: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """(bucket, key, version) of an S3 notification or EventBridge Object Created event."""
    records = event.get("Records")
    if isinstance(records, list) and records and "s3" in records[0]:
        s3 = records[0]["s3"]
        obj = s3["object"]
        return s3["bucket"]["name"], unquote_plus(obj["key"]), obj.get("versionId")
    if event.get("source") == "aws.s3" and event.get("detail-type") == "Object Created":
        detail = event["detail"]
        return detail["bucket"]["name"], detail["object"]["key"], detail["object"].get("version-id")
    return None


def payload_for_object(bucket: str, key: str, root: str | None = None) -> dict[str, Any]:
    from steps import storage
    from steps.config import route_key

    configs = storage.list_uris(root or config_root(), suffix=".json")
    configs = [c for c in configs if not c.endswith(".schema.json")]
    return {"step": "ingest", "config": route_key(key, configs), "source": f"s3://{bucket}/{key}"}


def _routed_or_empty(bucket: str, key: str) -> dict[str, Any]:
    from steps.errors import RefloadError

    try:
        routed = payload_for_object(bucket, key)
    except RefloadError:
        return {"source": f"s3://{bucket}/{key}"}
    return {"source": routed["source"], "config": routed["config"]}


def to_payload(event: dict[str, Any]) -> dict[str, Any]:
    """Any accepted event -> a complete step payload (with a run_id)."""
    if not isinstance(event, dict):
        raise ConfigError(f"event must be a JSON object, got {type(event).__name__}")
    if isinstance(event.get("state"), dict) and "step" in event:
        # A state machine Task sends {"step": ..., "state": <the execution's state>}.
        # Keys beside "state" (the step, the execution id) are added to it.
        event = {**event["state"], **{k: v for k, v in event.items() if k != "state"}}
    landed = _landed_object(event)
    if landed and event.get("step", "ingest") == "ingest":
        bucket, key, _version = landed
        payload = payload_for_object(bucket, key)
        payload.update({k: event[k] for k in ("run_id", "warehouse", "curated_root") if k in event})
    elif landed:
        # A later step (notify after a failed ingest) still carries the S3 event: keep the
        # step, and name the object and, when a config routes it, the table.
        payload = {**event, **_routed_or_empty(*landed[:2])}
    elif "step" in event:
        payload = dict(event)
    else:
        raise ConfigError(
            "event is neither a step payload (with 'step') nor an S3 / EventBridge "
            f"Object Created event; keys: {', '.join(sorted(event)) or 'none'}"
        )
    step = payload["step"]
    if step not in REQUIRED_KEYS:
        raise ConfigError(f"event: {unknown_name('step', str(step), REQUIRED_KEYS)}")
    missing = [k for k in REQUIRED_KEYS[step] if not payload.get(k)]
    if missing:
        raise ConfigError(f"'{step}' payload is missing {', '.join(missing)}")
    payload.setdefault("run_id", new_run_id())
    payload.setdefault("curated_root", os.environ.get("REFLOAD_CURATED_ROOT", "curated"))
    return payload
