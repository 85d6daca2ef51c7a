"""Telling text from binary by the first bytes, and the encodings text comes in: UTF-8
(with or without a BOM), UTF-16/32 (a BOM, the config's word, or NUL-riddled bytes), and the
stream that transcodes UTF-16/32 to UTF-8 as a CSV is read.
"""

from __future__ import annotations

import codecs
import io
import re
from typing import Any

from steps.shared.errors import RejectedInput

# First bytes of files that are not text, by what they are. Only signatures no vendor's
# text starts with (not 'BM' or 'ORC': a header may); gzip is read through instead.
BINARY_SIGNATURES = (
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"%PDF-", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"PAR1", "parquet"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "xls (or another OLE2 document)"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"Rar!\x1a\x07", "rar"),
    (b"SQLite format 3\x00", "sqlite"),
    (b"Obj\x01", "avro"),
    (b"ARROW1", "arrow"),
    (b"\x7fELF", "an executable"),
)
# Signatures a header could start with ('PAR1,PAR2'): binary only with control bytes after.
TEXT_LIKE_KINDS = ("parquet", "arrow")
# What a zip holds, told by the folder of its first members.
ZIP_KINDS = ((b"xl/", "xlsx"), (b"word/", "docx"), (b"ppt/", "pptx"))


def binary_kind(head: bytes) -> str | None:
    """What the file is when its first bytes say it is not text ('pdf', 'xlsx', ...)."""
    if wide_encoding(head):  # UTF-16/32 text is full of NUL bytes, and still text
        return None
    kind = next((k for magic, k in BINARY_SIGNATURES if head.startswith(magic)), None)
    if kind in TEXT_LIKE_KINDS and not re.search(rb"[\x00-\x08\x0e-\x1f]", head[:1024]):
        return None
    if kind is None and head[257:265] in (b"ustar\x0000", b"ustar  \x00"):
        return "tar"
    if kind == "zip":
        return next((k for folder, k in ZIP_KINDS if folder in head), kind)
    if kind is None and head.startswith(b"BZh") and head[4:10] == b"1AY&SY":
        return "bzip2"
    return kind


# Byte-order marks of the wide Unicode encodings, UTF-32's first (FF FE 00 00 starts with
# UTF-16 LE's FF FE): Excel's "Unicode Text" is UTF-16 LE with a BOM.
WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def wide_encoding(head: bytes, declared: str = "utf-8") -> str | None:
    """The UTF-16/32 codec a text file is in: its byte-order mark's (whatever the config
    declares, as a UTF-8 BOM is always tolerated), else the declared one if it is wide;
    a plain utf-16/utf-32 without a BOM is little-endian, as Windows writes it."""
    bom = next((codec for mark, codec in WIDE_BOMS if head.startswith(mark)), None)
    if bom:
        return bom
    try:
        name = codecs.lookup(declared).name
    except LookupError:
        return None
    if name in ("utf-16", "utf-32"):
        return f"{name}-le"
    return name if name.startswith(("utf-16", "utf-32")) else None


def bomless_utf16(head: bytes) -> str | None:
    """'utf-16-le' or 'utf-16-be' for text without a BOM whose every other byte is NUL
    (ASCII written as UTF-16), which read as UTF-8 would be NUL-riddled columns."""
    sample = head[: 1 << 12]
    sample = sample[: len(sample) // 2 * 2]
    if len(sample) < 4:
        return None
    for codec, nuls, chars in (
        ("utf-16-le", sample[1::2], sample[::2]),
        ("utf-16-be", sample[::2], sample[1::2]),
    ):
        if nuls.count(0) > 0.9 * len(nuls) and chars.count(0) < 0.1 * len(chars):
            return codec
    return None


def _wide_error(
    uri: str, encoding: str, data: bytes, error: UnicodeDecodeError, line: int, column: int
) -> RejectedInput:
    """`_undecodable` for UTF-16/32, where a line break is not the byte 0x0A: the line and
    character are counted in the text decoded before the bad bytes."""
    before = data[: error.start].decode(encoding, "replace")
    breaks = re.findall(r"\r\n|\r|\n", before)
    last = max(before.rfind("\n"), before.rfind("\r"))
    column = len(before) - last - 1 if breaks else column + len(before)
    return RejectedInput(
        f"cannot decode byte(s) {data[error.start : error.end]!r} as {encoding} at character "
        f"{column + 1}; set 'encoding' in the config",
        file=uri,
        line=line + len(breaks),
    )


def _decode_wide(data: bytes, uri: str, encoding: str) -> str:
    try:
        return data.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        raise _wide_error(uri, encoding, data, error, 1, 0) from None


class _Utf8Stream(io.RawIOBase):
    """A UTF-16/32 stream as UTF-8 bytes, transcoded as it is read: Arrow's reader and the
    csv module then read it as any UTF-8 file, streaming in the same bounded memory. Bytes
    that are not text name their line, counted in the text decoded so far."""

    def __init__(self, inner: Any, encoding: str, uri: str) -> None:
        self.inner, self.encoding, self.uri = inner, encoding, uri
        self.decoder = codecs.getincrementaldecoder(encoding)()
        self.pending = bytearray()
        self.ended = False
        self.line, self.column, self.after_cr = 1, 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while len(self.pending) < len(buffer) and not self.ended:
            raw = self.inner.read(max(len(buffer), 1 << 16))
            self.ended = not raw
            self.pending += self._transcode(bytes(raw))
        count = min(len(buffer), len(self.pending))
        buffer[:count] = self.pending[:count]
        del self.pending[:count]
        return count

    def _transcode(self, raw: bytes) -> bytes:
        data = getattr(self.decoder, "buffer", b"") + raw  # with an unfinished character
        try:
            text = self.decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as error:
            raise _wide_error(
                self.uri, self.encoding, data, error, self.line, self.column
            ) from None
        breaks = text.count("\n") + text.count("\r") - text.count("\r\n")
        if self.after_cr and text.startswith("\n"):
            breaks -= 1  # a CRLF split between two reads is one line end
        if text:
            self.after_cr = text.endswith("\r")
            last = max(text.rfind("\n"), text.rfind("\r"))
            self.column = len(text) - last - 1 if last >= 0 else self.column + len(text)
        self.line += breaks
        return text.encode("utf-8")

    def close(self) -> None:
        self.inner.close()
        super().close()


def _decode(data: bytes, uri: str, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        raise _undecodable(uri, encoding, data, error, 1, 0) from None
    return text.removeprefix("\ufeff")


def _undecodable(
    uri: str, encoding: str, data: bytes, error: UnicodeDecodeError, line: int, column: int
) -> RejectedInput:
    """`data` is what the decoder was given; `line`/`column` where `data` starts."""
    before = data[: error.start]
    line_start = max(before.rfind(b"\n"), before.rfind(b"\r")) + 1
    column = error.start - line_start + (column if line_start == 0 else 0)
    bad = data[error.start : error.end]
    return RejectedInput(
        f"cannot decode byte(s) {bad!r} as {encoding.removesuffix('-sig')} at character "
        f"{column + 1}; set 'encoding' in the config",
        file=uri,
        line=line + _line_breaks(before),
    )


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")


def _line_breaks(data: bytes) -> int:
    """Line ends in `data`, whichever style: LF, CRLF or a lone CR."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")
