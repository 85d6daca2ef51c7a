"""Object storage: the same calls for local paths and s3:// URIs.

boto3 honours AWS_ENDPOINT_URL itself, so a local S3 (moto, MinIO) needs no code.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from steps.shared import cost
from steps.shared.errors import (
    ConfigError,
    InfrastructureError,
    RefloadError,
    RejectedInput,
    StorageUnavailable,
)

_s3_client: Any = None


def s3_client() -> Any:
    """A shared boto3 S3 client (created on first use: boto3 is slow to import)."""
    global _s3_client
    if _s3_client is None:
        import boto3

        _s3_client = _metered(boto3.client("s3"))
    return _s3_client


def set_s3_client(client: Any) -> None:
    """Hand in a client (tests, or a caller with its own session)."""
    global _s3_client
    _s3_client = _metered(client) if client is not None else None


def _count_request(model: Any, **_: Any) -> None:
    cost.count_s3_request(model.name)


def _metered(client: Any) -> Any:
    """Every S3 call this client makes is counted in the running step's cost (a retry of
    a call is not: botocore's before-call event fires once per call)."""
    client.meta.events.register("before-call.s3", _count_request, unique_id="refload-cost")
    return client


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def join(root: str, *parts: str) -> str:
    if is_s3(root):
        return "s3://" + posixpath.join(root.removeprefix("s3://").rstrip("/"), *parts)
    return str(Path(_local(root), *parts))


def _s3_error(error: Exception, uri: str) -> Exception:
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(error, S3UploadFailedError) and isinstance(error.__context__, ClientError):
        error = error.__context__  # upload_file's wrapper: S3's own answer is inside
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in {"NoSuchKey", "404", "NotFound"}:
            return RejectedInput("object does not exist", file=uri)
        if code in {"NoSuchBucket"}:
            return InfrastructureError("bucket does not exist", file=uri)
        if code in {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return InfrastructureError(f"access denied ({code})", file=uri)
        if status >= 500 or code in {"SlowDown", "Throttling", "RequestTimeout"}:
            return StorageUnavailable(f"S3 is unavailable ({code})", file=uri)
        return InfrastructureError(f"S3 error {code}: {error}", file=uri)
    if isinstance(error, BotoCoreError):
        return StorageUnavailable(f"S3 could not be reached: {error}", file=uri)
    return error


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            body: bytes = s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as error:
            raise _s3_error(error, uri) from error
        return body
    try:
        return _local(uri).read_bytes()
    except FileNotFoundError:
        raise RejectedInput("file does not exist", file=uri) from None
    except IsADirectoryError:
        raise RejectedInput("is a directory, not a file", file=uri) from None
    except PermissionError:
        raise InfrastructureError("permission denied", file=uri) from None
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise RejectedInput(SYMLINK_LOOP, file=uri) from None


SYMLINK_LOOP = "is a symbolic link that loops (to itself, or through others back to itself)"


def unreadable_links(prefix: str, suffix: str = "") -> dict[str, str]:
    """Symbolic links directly under a local folder that lead to no file (`list_uris` leaves
    them out), each with why: a loop, or a target that does not exist."""
    if is_s3(prefix):
        return {}
    found = {}
    for path in sorted(_local(prefix).iterdir()):
        if path.name.endswith(suffix) and path.is_symlink() and not path.exists():
            try:
                path.stat()
            except OSError as error:
                found[str(path)] = (
                    SYMLINK_LOOP
                    if error.errno == errno.ELOOP
                    else f"is a symbolic link to {os.readlink(path)}, which does not exist"
                )
    return found


def size(uri: str) -> int:
    """Bytes in an object or file."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            return int(s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"])
        except Exception as error:
            raise _s3_error(error, uri) from error
    try:
        return _local(uri).stat().st_size
    except FileNotFoundError:
        raise RejectedInput("file does not exist", file=uri) from None
    except OSError as error:
        if error.errno != errno.ELOOP:
            raise
        raise RejectedInput(SYMLINK_LOOP, file=uri) from None


# GetBucketLocation answers no constraint for us-east-1, and "EU" (legacy) for eu-west-1.
LEGACY_LOCATIONS = {"": "us-east-1", "EU": "eu-west-1"}


def bucket_region(uri: str) -> str:
    """The AWS region of an s3:// URI's bucket (GetBucketLocation)."""
    bucket, _ = split_s3(uri)
    try:
        location = s3_client().get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except Exception as error:
        raise _s3_error(error, f"s3://{bucket}") from error
    return LEGACY_LOCATIONS.get(location or "", location or "us-east-1")


def write_bytes(uri: str, data: bytes, content_type: str | None = None) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        # A page served from S3 renders only with its type (S3's default is binary).
        extra = {"ContentType": content_type} if content_type else {}
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data, **extra)
        except Exception as error:
            raise _s3_error(error, uri) from error
        return
    _replace_atomically(_local(uri), lambda partial: partial.write_bytes(data))


# A full disk may have room again later (another run's scratch gone, a new Lambda
# environment); a read-only or wrong folder will not.
TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EBUSY, errno.EINTR})


def local_error(error: OSError, where: str) -> RefloadError:
    """A failed local read or write (curated folder, scratch, /tmp) as a storage error:
    retryable when the disk is full, terminal when the folder is read-only or invalid."""
    code = error.errno
    if code is None:  # pyarrow's OSErrors carry the errno only in their text
        found = re.search(r"\[Errno (\d+)\]", str(error))
        code = int(found.group(1)) if found else None
    reason = os.strerror(code) if code else str(error)
    if error.filename and str(error.filename) != where:
        reason += f" ({error.filename})"
    if code in TRANSIENT_ERRNOS:
        return StorageUnavailable(f"cannot write: {reason}", file=where)
    return InfrastructureError(f"cannot write: {reason}", file=where)


# A file name is at most 255 bytes on Linux (and in Lambda's /tmp); an S3 key's last part
# may have up to 1,024.
MAX_NAME_BYTES = 255


def short_name(name: str, room: int = 0) -> str:
    """`name`, or when it (plus `room` bytes the caller adds) would pass MAX_NAME_BYTES, a
    hash of it that keeps its extensions (`.csv.gz`), which the readers may look at."""
    if len(name.encode()) + room <= MAX_NAME_BYTES:
        return name
    suffixes = "".join(PurePosixPath(name).suffixes[-2:])
    kept = suffixes if len(suffixes.encode()) <= 32 else ""
    return hashlib.sha256(name.encode()).hexdigest()[:32] + kept


def _replace_atomically(target: Path, fill: Callable[[Path], object]) -> None:
    """Write beside the target, then rename, so a reader never sees half a file.

    The partial file's name is unique per call: two runs writing the same target at once
    each rename their own complete file, and a failed write leaves nothing behind.
    """
    partial = target.with_name(
        f"{short_name(target.name, room=21)}.{uuid.uuid4().hex[:12]}.partial"
    )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fill(partial)
        os.replace(partial, target)
    except OSError as error:
        with suppress(OSError):
            partial.unlink(missing_ok=True)
        raise local_error(error, str(target)) from None


@contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """A temporary folder for one run (unique, removed after); failures as storage errors."""
    try:
        folder = tempfile.TemporaryDirectory(prefix=prefix)
    except OSError as error:  # no usable temporary folder (TMPDIR, /tmp)
        where = tempfile.tempdir or os.environ.get("TMPDIR") or "/tmp"
        raise local_error(error, where) from None
    with folder as name:
        try:
            yield Path(name)
        except OSError as error:
            raise local_error(error, name) from None


def _s3_listing(prefix: str) -> list[dict[str, Any]]:
    """The listing entries (Key, ETag, LastModified, ...) of the objects directly under an
    s3:// folder-like prefix, every page of it."""
    bucket, key = split_s3(prefix.rstrip("/") + "/")
    try:
        pages = (
            s3_client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=bucket, Prefix=key, Delimiter="/")
        )
        return [
            {**item, "Uri": f"s3://{bucket}/{item['Key']}"}
            for page in pages
            for item in page.get("Contents", [])
        ]
    except Exception as error:
        raise _s3_error(error, prefix) from error


def _s3_objects(prefix: str) -> dict[str, str]:
    """Objects directly under an s3:// folder-like prefix -> their ETag, from one listing."""
    return {item["Uri"]: str(item.get("ETag", "")).strip('"') for item in _s3_listing(prefix)}


# Where a message about the config root tells the user to look.
CONFIG_ROOT_HINT = "REFLOAD_CONFIG_ROOT (or the command's --config-root)"


def list_uris(prefix: str, suffix: str = "") -> list[str]:
    """Objects or files directly under a folder-like prefix, sorted."""
    if is_s3(prefix):
        return sorted(u for u in _s3_objects(prefix) if u.endswith(suffix))
    folder = _local(prefix)
    if not folder.is_dir():
        # A config root that is not there is a setting to fix (exit 2), not an outage.
        raise ConfigError(
            "config folder does not exist",
            file=prefix,
            note=f"set {CONFIG_ROOT_HINT} to the folder that holds the table configs",
        )
    return sorted(str(p) for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix))


def list_versions(prefix: str, suffix: str = "") -> dict[str, str]:
    """Objects directly under a prefix -> what changes when one is rewritten.

    S3: the ETag (the listing carries it, no extra request); local: mtime, size and inode.
    """
    if is_s3(prefix):
        found = _s3_objects(prefix)
        return {uri: found[uri] for uri in sorted(found) if uri.endswith(suffix)}
    versions = {}
    for uri in list_uris(prefix, suffix):
        stat = _local(uri).stat()
        versions[uri] = f"{stat.st_mtime_ns}:{stat.st_size}:{stat.st_ino}"
    return versions


def newest_uri(prefix: str, suffix: str = "") -> str | None:
    """The object or file directly under a prefix written last (S3 LastModified, mtime),
    or None when there is none (or no such folder)."""
    if is_s3(prefix):
        found = [i for i in _s3_listing(prefix) if i["Key"].endswith(suffix)]
        return str(max(found, key=lambda i: i["LastModified"])["Uri"]) if found else None
    folder = _local(prefix)
    if not folder.is_dir():
        return None
    files = [p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix)]
    return str(max(files, key=lambda p: p.stat().st_mtime_ns)) if files else None


@dataclass(frozen=True)
class ObjectInfo:
    """What identifies one version of a source object, for the load ledger."""

    version: str
    content_hash: str
    modified_at: dt.datetime | None = None  # LastModified / mtime: orders a table's files


@contextmanager
def local_file(uri: str, version_id: str | None = None) -> Iterator[Path]:
    """A path to read `uri` from: the file itself, or an S3 object downloaded to a temp file
    (that version of it, with `version_id`).

    Large sources are read from disk in blocks, never held whole in memory.
    """
    if not is_s3(uri):
        path = _local(uri)
        if not path.exists():
            raise RejectedInput("file does not exist", file=uri)
        if path.is_dir():
            raise RejectedInput("is a directory, not a file", file=uri)
        yield path
        return
    bucket, key = split_s3(uri)
    with scratch_folder("refload-") as folder:
        # Named after the key's last part, hashed when that is longer than a file name may be.
        path = folder / short_name(posixpath.basename(key) or "object")
        extra = {"VersionId": version_id} if version_id else None
        try:
            s3_client().download_file(bucket, key, str(path), ExtraArgs=extra)
        except OSError as error:
            raise local_error(error, str(path)) from None
        except Exception as error:
            raise _s3_error(error, uri) from error
        yield path


MANIFEST_SUFFIX = ".manifest"


def curated_parts(curated_uri: str) -> list[str]:
    """The Parquet files of a curated output: the file itself, or every part a manifest
    lists (the Spark engine's dataset; Redshift's COPY manifest format)."""
    if not curated_uri.endswith(MANIFEST_SUFFIX):
        return [curated_uri]
    import json

    try:
        entries = json.loads(read_bytes(curated_uri))["entries"]
        return [str(entry["url"]) for entry in entries]
    except (ValueError, KeyError, TypeError) as error:
        raise RejectedInput(f"not a curated manifest: {error}", file=curated_uri) from None


@contextmanager
def local_files(uris: list[str]) -> Iterator[list[Path]]:
    """`local_file` for several URIs at once (downloaded ones are kept until the end)."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield [stack.enter_context(local_file(uri)) for uri in uris]


def _move_or_copy(path: Path, partial: Path) -> None:
    """A scratch file is moved when it is on the target's file system (a 5M-row curated
    file: a rename instead of a 0.15 s copy), else copied."""
    try:
        os.replace(path, partial)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        shutil.copyfile(path, partial)


def upload_file(uri: str, path: Path, *, move: bool = False) -> None:
    """Put a local file at `uri` (atomically for local targets). With `move`, the file is
    scratch that may be moved there rather than copied."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().upload_file(str(path), bucket, key)
        except Exception as error:
            raise _s3_error(error, uri) from error
        return
    put = _move_or_copy if move else shutil.copyfile
    _replace_atomically(_local(uri), lambda partial: put(path, partial))


@dataclass(frozen=True)
class SourceStamp:
    """Which version of a source is read, and when it was written."""

    version: str  # S3 version id or ETag; a local file's mtime
    modified_at: dt.datetime  # S3 LastModified or the file's mtime (UTC, no zone)
    version_id: str | None = None  # the S3 version to download (None: unversioned, local)


def source_stamp(uri: str, version_id: str | None = None) -> SourceStamp:
    """HEAD of the object (of `version_id`, when an event names one). Taken before the
    download, which then reads the version it names: a newer upload meanwhile is not mixed
    in. (The content hash is taken while the source is read: steps.ingest.sources.)"""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        extra = {"VersionId": version_id} if version_id else {}
        try:
            head = s3_client().head_object(Bucket=bucket, Key=key, **extra)
        except Exception as error:
            failure = _s3_error(error, uri)
            if version_id and isinstance(failure, (RejectedInput, InfrastructureError)):
                # HEAD carries no error code: a 400 or 404 for a version the event named.
                status = getattr(error, "response", {}).get("ResponseMetadata", {})
                if status.get("HTTPStatusCode") in {400, 404}:
                    failure = RejectedInput(f"version {version_id!r} does not exist", file=uri)
            raise failure from error
        found = head.get("VersionId")
        modified = head["LastModified"].astimezone(dt.UTC).replace(tzinfo=None)
        # "null": an object written while versioning was off; GetObject takes no id for it.
        pinned = found if found and found != "null" else None
        return SourceStamp(str(found or head.get("ETag", "").strip('"')), modified, pinned)
    path = _local(uri)
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        raise RejectedInput("file does not exist", file=uri) from None
    modified = dt.datetime.fromtimestamp(mtime, dt.UTC).replace(tzinfo=None)
    return SourceStamp(f"mtime:{int(mtime)}", modified)
