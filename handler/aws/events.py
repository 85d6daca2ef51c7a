"""Events in, step payloads out: step payloads, S3 notifications, EventBridge events.

A landed object names no table; the table is found by routing its key
through the configs' `source_prefix` (see steps.shared.config.model.route_key).

What each step takes and returns (the pydantic payload and result models) is in
steps.contracts; `to_payload` turns any accepted event into a payload and validates it there.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import posixpath
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from steps.contracts import PAYLOADS, RUN_ID, RUN_ID_RULE, validate_payload
from steps.shared.errors import ConfigError
from steps.shared.names import unknown_name

if TYPE_CHECKING:
    from steps.shared.config.routing import RoutingEntry

DEFAULT_CONFIG_ROOT = "configs"

# Keys of the AWS event itself (EventBridge envelope, S3 notification): a payload built
# from a landed object keeps only refload's own keys beside them.
EVENT_ENVELOPE = frozenset(
    {"version", "id", "detail-type", "source", "account", "time", "region", "resources"}
    | {"detail", "replay-name", "Records"}
)


def new_run_id() -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def check_run_id(run_id: str) -> str:
    if not RUN_ID.fullmatch(run_id):
        raise ConfigError(f"run id {run_id[:100]!r} is not valid: use {RUN_ID_RULE}")
    return run_id


def run_id_of_execution(execution_id: str) -> str | None:
    """A Step Functions execution's name (the last part of its ARN) as the run id.

    Every Task passes the execution id, so Ingest and the Notify after its Catch
    derive the same run id from it: alerts, logs and etl_audit.run_log agree.
    """
    name = execution_id.rsplit(":", 1)[-1]
    if not RUN_ID.fullmatch(name[:64]):
        return None
    if len(name) > 64:  # execution names may have 80 characters: shorten, still unique
        name = f"{name[:51]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return name


def config_root() -> str:
    return os.environ.get("REFLOAD_CONFIG_ROOT", DEFAULT_CONFIG_ROOT)


# A local folder standing in for the raw bucket (`replay --raw-root`): an event's
# s3://BUCKET/KEY is read from DIR/KEY. In AWS the variable names the raw bucket's s3://
# prefix (for freshness alerts), and the event's own object is read.
RAW_ROOT_ENV = "REFLOAD_RAW_ROOT"


def local_raw_root(payload: dict[str, Any]) -> str | None:
    root = payload.get("raw_root") or os.environ.get(RAW_ROOT_ENV)
    return None if not root or "://" in str(root) else str(root)


def raw_path(root: str, key: str) -> str:
    """DIR/KEY, never outside DIR: a key is any text, `..` included."""
    parts = [part for part in key.split("/") if part]  # 'a//b' and '/a' stay under DIR
    if not parts or any(part in (".", "..") for part in parts):
        raise ConfigError(
            "has a '.' or '..' segment, which would read a file outside the raw root; "
            "copy the file under the raw root and replay a step payload naming it",
            key=f"object key {key[:300]!r}",
            file=root,
        )
    return str(Path(root, *parts))


# --- landed objects ----------------------------------------------------------------------


def _landed_object(event: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """(bucket, key, version id) of an S3 notification or EventBridge Object Created event.

    Both carry the key URL-encoded (`+` for a space, `%C3%A4` for `ä`), as Powertools'
    S3 data classes decode it. The version id is there (not null) on a versioned bucket.
    """
    records = event.get("Records")
    if isinstance(records, list) and records and "s3" in records[0]:
        if len(records) > 1:
            # S3 sends one record per notification; several mean a hand-made or batched
            # event, and each object deserves its own run, alert and re-run input.
            raise ConfigError(
                f"the S3 notification has {len(records)} records; refload runs one object "
                "per event: replay each record as its own event"
            )
        s3 = records[0]["s3"]
        landed = s3["object"]
        return s3["bucket"]["name"], unquote_plus(landed["key"]), landed.get("versionId")
    if event.get("source") == "aws.s3" and event.get("detail-type") == "Object Created":
        detail = event["detail"]
        landed = detail["object"]
        return detail["bucket"]["name"], unquote_plus(landed["key"]), landed.get("version-id")
    return None


def _object_size(event: dict[str, Any]) -> int | None:
    """The landed object's size in bytes, as the event states it (both kinds carry it)."""
    records = event.get("Records")
    if isinstance(records, list) and records:
        size = records[0].get("s3", {}).get("object", {}).get("size")
    else:
        size = event.get("detail", {}).get("object", {}).get("size")
    return size if isinstance(size, int) else None


# What to do with a landed object no config routes, or an empty one: `ignore` (default: a
# warning log line and an EMF metric, no page) or `alert` (fail it, and alert, as any file).
UNROUTED_ENV = "REFLOAD_UNROUTED"
UNROUTED_CHOICES = ("ignore", "alert")


def _unrouted_policy() -> str:
    choice = os.environ.get(UNROUTED_ENV, "ignore").strip().lower() or "ignore"
    if choice not in UNROUTED_CHOICES:
        import structlog

        # A typo must not hide files: it alerts, and says why.
        structlog.get_logger("refload").warning(
            f"{UNROUTED_ENV}: {unknown_name('choice', choice, UNROUTED_CHOICES)}; alerting"
        )
        return "alert"
    return choice


def _not_loaded(
    event: dict[str, Any], bucket: str, key: str, version_id: str | None
) -> dict[str, Any]:
    """The ingest payload of a landed object, or, for one no config routes or an empty one,
    an ignored payload whose `not_loaded` says which (unless REFLOAD_UNROUTED=alert)."""
    try:
        routed = payload_for_object(bucket, key, event.get("config_root"), version_id)
    except ConfigError as error:
        if not error.details.get("unrouted") or _unrouted_policy() == "alert":
            raise
        reason = f"not loaded: {error.reason}"
        return {"ignored": True, "not_loaded": "unrouted", "skipped_reason": reason}
    if _object_size(event) == 0 and _unrouted_policy() != "alert":
        reason = "not loaded: an empty object (0 bytes)"
        return {**routed, "ignored": True, "not_loaded": "empty", "skipped_reason": reason}
    return routed


def ignored_reason(key: str) -> str | None:
    """Why a landed object is no file to load: folder markers and marker files."""
    if key.endswith("/"):
        return "a folder marker (the key ends with '/')"
    name = posixpath.basename(key)
    if name.startswith(("_", ".")):
        return f"a marker file ('{name}' starts with '{name[0]}')"
    return None


_routing_cache: dict[str, tuple[str, RoutingEntry]] = {}


def routing_entries(root: str) -> list[RoutingEntry]:
    """Every config's routing entry, re-read only when the file changed (ETag or mtime):
    a warm Lambda container reads the configs once, and sees an upload at once."""
    from steps.shared.config.routing import routing_entry
    from steps.shared.io import storage

    entries = []
    versions = storage.list_versions(root, suffix=".json")
    for uri, version in versions.items():
        if uri.endswith(".schema.json"):
            continue
        cached = _routing_cache.get(uri)
        if cached is None or cached[0] != version:
            cached = (version, routing_entry(uri, storage.read_bytes(uri)))
            _routing_cache[uri] = cached
        entries.append(cached[1])
    for gone in set(_routing_cache) - set(versions):
        del _routing_cache[gone]
    return entries


def payload_for_object(
    bucket: str, key: str, root: str | None = None, version_id: str | None = None
) -> dict[str, Any]:
    from steps.shared.config.routing import route_key
    from steps.shared.io.storage import CONFIG_ROOT_HINT

    root = root or config_root()
    entries = routing_entries(root)
    hint = f"routing reads the table configs under '{root}': set {CONFIG_ROOT_HINT}"
    if not entries:
        # Not "unrouted" (ignored by default): no config at all is a setting to fix.
        raise ConfigError("no table config to route this object key", key=key, note=hint)
    try:
        routed = route_key(key, entries)
    except ConfigError as error:
        if "unrouted" in error.details:  # no prefix matched: perhaps the wrong folder
            error.note = error.note or hint
        raise
    payload = {
        "step": "ingest",
        "config": routed.uri,
        "table": routed.table,
        "source": f"s3://{bucket}/{key}",
    }
    if version_id and version_id != "null":
        payload["source_version_id"] = version_id
    return payload


def _routed_or_empty(bucket: str, key: str, root: str | None) -> dict[str, Any]:
    from steps.shared.errors import RefloadError

    try:
        routed = payload_for_object(bucket, key, root)
    except RefloadError:
        return {"source": f"s3://{bucket}/{key}"}
    return {k: routed[k] for k in ("source", "config", "table")}


def table_of(config_uri: str) -> str | None:
    """The table a config names, read leniently (a broken config fails in its step)."""
    from steps.shared.config.routing import routing_entry
    from steps.shared.errors import RefloadError
    from steps.shared.io import storage

    try:
        return routing_entry(config_uri, storage.read_bytes(config_uri)).table
    except RefloadError:
        return None


# --- the boundary ------------------------------------------------------------------------


def to_payload(event: dict[str, Any]) -> dict[str, Any]:
    """Any accepted event -> a complete, validated step payload (with a run_id).

    A landed marker object (see `ignored_reason`) gives `{"ignored": true, ...}`: no step
    runs for it.
    """
    if not isinstance(event, dict):
        raise ConfigError(f"event must be a JSON object, got {type(event).__name__}")
    if isinstance(event.get("state"), dict) and "step" in event:
        # A state machine Task sends {"step": ..., "state": <the execution's state>}.
        # Keys beside "state" (the step, the execution id) are added to it.
        event = {**event["state"], **{k: v for k, v in event.items() if k != "state"}}
    try:
        landed = _landed_object(event)
    except ConfigError:
        if event.get("step") != "notify":
            raise
        landed = None  # the event is what failed: Notify still reports it
    if landed:
        bucket, key, version_id = landed
        own = {k: v for k, v in event.items() if k not in EVENT_ENVELOPE}
        reason = ignored_reason(key)
        if reason:
            payload = {**own, "ignored": True, "skipped_reason": f"ignored: {reason}"}
            payload["source"] = f"s3://{bucket}/{key}"
        elif own.get("step", "ingest") == "ingest":
            payload = {**own, **_not_loaded(event, bucket, key, version_id)}
            raw_root = local_raw_root(own)
            if raw_root and not payload.get("ignored"):
                payload["source"] = raw_path(raw_root, key)
                payload.pop("source_version_id", None)  # a local file has no S3 version
            else:
                payload["source"] = f"s3://{bucket}/{key}"
        else:
            # A later step (notify after a failed ingest) still carries the S3 event: keep
            # the step, and name the object and, when a config routes it, the table.
            payload = {**own, **_routed_or_empty(bucket, key, own.get("config_root"))}
    elif "step" in event:
        payload = dict(event)
        raw_root = local_raw_root(payload)
        source = str(payload.get("source") or "")
        if raw_root and payload["step"] == "ingest" and source.startswith("s3://"):
            # An alert's rerun.json from AWS, replayed on a laptop.
            payload["source"] = raw_path(raw_root, source.removeprefix("s3://").partition("/")[2])
            payload.pop("source_version_id", None)
    else:
        raise ConfigError(
            "event is neither a step payload (with 'step') nor an S3 / EventBridge "
            f"Object Created event; keys: {', '.join(sorted(event)) or 'none'}"
        )
    step = payload.setdefault("step", "ingest")
    if step not in PAYLOADS:
        raise ConfigError(f"event: {unknown_name('step', str(step), PAYLOADS)}")
    if step == "notify" and not RUN_ID.fullmatch(str(payload.get("run_id") or "x")):
        # The bad run id is what failed (ConfigError in the step): alert under a good one.
        payload["run_id"] = None
    if not payload.get("run_id"):
        execution = payload.get("execution_id")
        payload["run_id"] = (execution and run_id_of_execution(execution)) or new_run_id()
    payload.setdefault("curated_root", os.environ.get("REFLOAD_CURATED_ROOT", "curated"))
    if payload.get("ignored"):
        check_run_id(payload["run_id"])
        return payload
    payload = validate_payload(step, payload)
    if not payload.get("table") and payload.get("config"):
        payload["table"] = table_of(payload["config"])
    return payload
