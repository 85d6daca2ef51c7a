"""Object storage: the same calls for local paths and s3:// URIs.

boto3 honours AWS_ENDPOINT_URL itself, so a local S3 (moto, MinIO) needs no code.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steps.errors import InfrastructureError, RejectedInput, StorageUnavailable

_s3_client: Any = None


def s3_client() -> Any:
    """A shared boto3 S3 client (created on first use: boto3 is slow to import)."""
    global _s3_client
    if _s3_client is None:
        import boto3

        _s3_client = boto3.client("s3")
    return _s3_client


def set_s3_client(client: Any) -> None:
    """Hand in a client (tests, or a caller with its own session)."""
    global _s3_client
    _s3_client = client


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
    from botocore.exceptions import BotoCoreError, ClientError

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


def write_bytes(uri: str, data: bytes) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        except Exception as error:
            raise _s3_error(error, uri) from error
        return
    path = _local(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so a reader never sees half a file.
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def list_uris(prefix: str, suffix: str = "") -> list[str]:
    """Objects or files directly under a folder-like prefix, sorted."""
    if is_s3(prefix):
        bucket, key = split_s3(prefix.rstrip("/") + "/")
        found = []
        try:
            pages = (
                s3_client()
                .get_paginator("list_objects_v2")
                .paginate(Bucket=bucket, Prefix=key, Delimiter="/")
            )
            for page in pages:
                found += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", [])]
        except Exception as error:
            raise _s3_error(error, prefix) from error
        return sorted(u for u in found if u.endswith(suffix))
    folder = _local(prefix)
    if not folder.is_dir():
        raise InfrastructureError("config folder does not exist", file=prefix)
    return sorted(str(p) for p in folder.iterdir() if p.is_file() and p.name.endswith(suffix))


@dataclass(frozen=True)
class ObjectInfo:
    """What identifies one version of a source object, for the load ledger."""

    uri: str
    version: str
    content_hash: str
    size: int


def describe(uri: str, data: bytes) -> ObjectInfo:
    """Version (S3 version id or ETag; local mtime) and sha256 of an object already read."""
    content_hash = hashlib.sha256(data).hexdigest()
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            head = s3_client().head_object(Bucket=bucket, Key=key)
        except Exception as error:
            raise _s3_error(error, uri) from error
        version = head.get("VersionId") or head.get("ETag", "").strip('"')
    else:
        version = f"mtime:{int(_local(uri).stat().st_mtime)}"
    return ObjectInfo(uri, version, content_hash, len(data))
