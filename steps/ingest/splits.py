"""Cutting a CSV into byte ranges for the Spark engine (steps.ingest.spark), on the driver,
each range starting at a record: one pass counts quote characters and newlines, and a
newline outside quotes starts a record. Files that cannot be cut so are one range."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steps.ingest.sources import reading_config, wide_encoding
from steps.shared.config.table import TableSpec
from steps.shared.io import storage

if TYPE_CHECKING:
    from steps.shared.config.model import TableConfig


@dataclasses.dataclass(frozen=True)
class Split:
    """Bytes [start, end) of the source, whose first byte is on line `first_line`."""

    index: int
    start: int
    end: int
    first_line: int
    whole: bool  # the whole file, read as the Lambda engine reads it


def _cuttable(path: Path, config: TableConfig) -> bool:
    if config.source_format != "csv":
        return False
    with path.open("rb") as probe:
        head = probe.read(4)
    # gzip; UTF-16/32 (by its BOM or the config), read whole by read_source, which
    # transcodes it: its newline is not the byte 0x0A.
    if head.startswith(b"\x1f\x8b") or wide_encoding(head, config.encoding):
        return False
    try:
        return "\n".encode(config.encoding) == b"\n" and config.quote_char.encode(
            config.encoding
        ) == config.quote_char.encode("ascii")
    except (UnicodeEncodeError, LookupError):
        return False


def plan_splits(path: Path, uri: str, spec: TableSpec, target: int) -> tuple[list[Split], bytes]:
    """The ranges of the source, and the header lines every range is parsed behind."""
    config = reading_config(uri, spec.config)  # the format as the reader sees it
    size = path.stat().st_size
    whole = [Split(0, 0, size, 1, whole=True)]
    if size <= target or not _cuttable(path, config):
        return whole, b""
    header_row = config.header_row
    with path.open("rb") as stream:
        head = stream.read(1 << 20)
        lines = head.split(b"\n", header_row)
        if len(lines) <= header_row:  # the header is not in the first MB: leave it whole
            return whole, b""
        data_start = len(head) - len(lines[-1])
        stream.seek(data_start)
        cuts = _record_starts(stream, data_start, header_row + 1, target, config.quote_char)
    bounds = [*cuts, (size, 0)]
    ranges = [(a, b, line) for (a, line), (b, _) in itertools.pairwise(bounds) if b > a]
    splits = [Split(i, a, b, line, whole=False) for i, (a, b, line) in enumerate(ranges)]
    return splits or whole, head[:data_start]


def _record_starts(
    stream: Any, offset: int, line: int, target: int, quote: str
) -> list[tuple[int, int]]:
    """(byte offset, line) of a record start about every `target` bytes from `offset`.

    A quote character toggles "inside a quoted value" (a doubled one toggles twice), so a
    newline seen with an even count of quotes before it ends a record.
    """
    quote_byte = quote.encode("ascii")
    starts = [(offset, line)]
    inside = False
    next_cut = offset + target
    position = offset
    while block := stream.read(16 << 20):
        i = 0
        while position + len(block) > next_cut:
            if next_cut > position + i:  # count up to the cut
                part = block[i : next_cut - position]
                inside ^= bool(part.count(quote_byte) & 1)
                line += part.count(b"\n")
                i = next_cut - position
            newline = block.find(b"\n", i)
            if newline < 0:  # the record goes on in the next block
                next_cut = position + len(block)
                break
            part = block[i : newline + 1]
            inside ^= bool(part.count(quote_byte) & 1)
            line += 1
            i = newline + 1
            if not inside:
                starts.append((position + i, line))
                next_cut = position + i + target
            else:
                next_cut = position + i
        part = block[i:]
        inside ^= bool(part.count(quote_byte) & 1)
        line += part.count(b"\n")
        position += len(block)
    return starts


def read_range(uri: str, start: int, end: int, version_id: str | None = None) -> bytes:
    if storage.is_s3(uri):
        bucket, key = storage.split_s3(uri)
        version = {"VersionId": version_id} if version_id else {}
        try:
            response = storage.s3_client().get_object(
                Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", **version
            )
        except Exception as error:
            raise storage._s3_error(error, uri) from error
        data: bytes = response["Body"].read()
        return data
    with open(uri.removeprefix("file://"), "rb") as stream:
        stream.seek(start)
        return stream.read(end - start)
