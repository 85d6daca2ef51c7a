"""The fleet's infrastructure incident (warehouse or storage unreachable): ONE incident for
every table it hits, kept in marker objects, never in the warehouse it is about.

Under REFLOAD_INCIDENT_ROOT (a folder or an s3:// prefix; default `<outbox>/incidents`):

    infrastructure/open.json             made by the first run it hits (an exclusive
                                         create: O_EXCL, or S3's If-None-Match: *)
    infrastructure/hits/<table>--<run>   one object per failing run: the occurrences and
                                         the tables, with no read-modify-write to race on
    infrastructure/reminded-<n>.json     the n-th reminder, made by one run only

A run that reaches the warehouse again resolves it: the markers are deleted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

from steps.shared.io import storage

KEY = "refload::infrastructure"  # no table is named "": no table's incidents share it
FOLDER = "infrastructure"


def incident_root(payload: dict[str, Any]) -> str:
    root = os.environ.get("REFLOAD_INCIDENT_ROOT")
    if root:
        return root
    outbox = payload.get("outbox") or os.environ.get("REFLOAD_OUTBOX") or "outbox"
    return storage.join(str(outbox), "incidents")


def _create(uri: str, body: dict[str, Any]) -> bool:
    """Write the object unless it exists; True when this call made it."""
    data = json.dumps(body, default=str).encode()
    if storage.is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = storage.split_s3(uri)
        try:
            storage.s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    try:  # a link never replaces: whole or absent, never half-written, to its readers
        os.link(partial, path)
    except FileExistsError:
        return False
    finally:
        partial.unlink(missing_ok=True)
    return True


def _read(uri: str) -> dict[str, Any] | None:
    if storage.is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = storage.split_s3(uri)
        try:
            body = storage.s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return dict(json.loads(body))
    path = Path(uri)
    return dict(json.loads(path.read_text())) if path.is_file() else None


def _list(prefix: str) -> list[str]:
    if storage.is_s3(prefix):
        return storage.list_uris(prefix)
    folder = Path(prefix)
    return (
        sorted(str(p) for p in folder.iterdir() if not p.name.startswith("."))
        if folder.is_dir()
        else []
    )


def _delete(uris: list[str]) -> None:
    for uri in uris:
        if storage.is_s3(uri):
            bucket, key = storage.split_s3(uri)
            storage.s3_client().delete_object(Bucket=bucket, Key=key)
        else:
            Path(uri).unlink(missing_ok=True)


def _hit_name(table: str | None, run_id: str | None) -> str:
    return re.sub(r"[^\w.-]+", "-", f"{table or 'unknown-table'}--{run_id or 'no-run'}")


def record_hit(
    payload: dict[str, Any], table: str | None, cause: str, remind_after: dt.timedelta
) -> dict[str, Any]:
    """Count this run in; `notify` is true for the run that opened it or one reminder."""
    root = storage.join(incident_root(payload), FOLDER)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    opened = _create(storage.join(root, "open.json"), {"first_seen": now.isoformat(), "key": KEY})
    _create(
        storage.join(root, "hits", _hit_name(table, payload.get("run_id"))),
        {"table": table, "run_id": payload.get("run_id"), "cause": cause, "at": now.isoformat()},
    )
    state = _read(storage.join(root, "open.json")) or {"first_seen": now.isoformat()}
    first_seen = dt.datetime.fromisoformat(state["first_seen"])
    hits = [Path(u).name.rsplit("--", 1)[0] for u in _list(storage.join(root, "hits"))]
    notify = opened
    if not opened and remind_after.total_seconds() > 0:
        slot = int((now - first_seen) / remind_after)
        notify = slot > 0 and _create(storage.join(root, f"reminded-{slot}.json"), {"at": str(now)})
    return {
        "incident_key": KEY,
        "occurrences": max(len(hits), 1),
        "first_seen": first_seen,
        "tables": sorted(set(hits)),
        "notify": notify,
    }


def resolve(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The open infrastructure incident, closed (its markers deleted); None when none is
    open. One stat or HEAD-sized read on a run's path."""
    root = storage.join(incident_root(payload), FOLDER)
    state = _read(storage.join(root, "open.json"))
    if state is None:
        return None
    hits = _list(storage.join(root, "hits"))
    tables = sorted({Path(u).name.rsplit("--", 1)[0] for u in hits})
    # open.json first: a failure from now on opens a new incident.
    _delete([storage.join(root, "open.json")])
    _delete(hits + [u for u in _list(root) if Path(u).name.startswith("reminded-")])
    return {"first_seen": state.get("first_seen"), "tables": tables, "occurrences": len(hits)}
