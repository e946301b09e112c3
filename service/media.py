"""Files over HTTP with byte ranges (RFC 9110 section 14), so a browser can seek in a video.

One range per request: ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` gets 206 with exactly those bytes; a
byte range that is malformed or starts past the end gets 416 with ``Content-Range: bytes */size``; a list
of several ranges is answered with the whole file (200), which the RFC allows, and so is a range in a unit
other than bytes, which the RFC requires a server to ignore (section 14.2).

Starlette's ``FileResponse`` serves ranges too, but answers another unit with 400 and several ranges with
a multipart body; this keeps the behaviour above.
"""

from __future__ import annotations

import mimetypes
import os
import re
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path

import anyio
from fastapi import HTTPException
from fastapi.responses import StreamingResponse

CHUNK = 256 * 1024
_SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

mimetypes.add_type("video/x-matroska", ".mkv")
mimetypes.add_type("video/webm", ".webm")
mimetypes.add_type("video/mp4", ".m4v")


class RangeNotSatisfiable(HTTPException):
    def __init__(self, size: int, reason: str) -> None:
        super().__init__(
            416, f"Range: {reason} (the file has {size} bytes)", headers={"Content-Range": f"bytes */{size}"}
        )


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte of a one-range ``Range`` header; None to send the whole file."""
    value = header.strip().replace(" ", "")
    unit, equals, _ = value.partition("=")
    if not equals or unit.lower() != "bytes":
        return None  # a unit this server does not know: ignore the header (RFC 9110, 14.2)
    value = "bytes=" + value[len(unit) + 1 :]
    if "," in value:
        return None  # several ranges: the whole file instead of multipart/byteranges
    match = _SINGLE_RANGE.match(value)
    if match is None:
        raise RangeNotSatisfiable(size, f"expected bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX, got {header!r}")
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        raise RangeNotSatisfiable(size, "bytes=- names no bytes")
    if not first_text:  # the last n bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size, f"a suffix of {suffix} bytes is empty")
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last < first:
        raise RangeNotSatisfiable(size, f"last byte {last} is before first byte {first}")
    if first >= size:
        raise RangeNotSatisfiable(size, f"first byte {first} is past the end")
    return first, min(last, size - 1)


async def _read(path: Path, first: int, length: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as handle:
        await handle.seek(first)
        remaining = length
        while remaining > 0:
            chunk = await handle.read(min(CHUNK, remaining))
            if not chunk:  # the file shrank meanwhile
                break
            remaining -= len(chunk)
            yield chunk


def media_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def file_response(path: Path, range_header: str | None) -> StreamingResponse:
    """``path`` (already known to be allowed) as 200, or 206 for one byte range."""
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise HTTPException(404, f"the file is missing on the server ({exc.strerror})") from None
    size = stat.st_size
    headers = {
        "Accept-Ranges": "bytes",
        "Last-Modified": formatdate(stat.st_mtime, usegmt=True),
        "ETag": f'"{stat.st_mtime_ns:x}-{size:x}"',
        "Cache-Control": "private, max-age=3600",
    }
    span = parse_range(range_header, size) if range_header else None
    if span is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(_read(path, 0, size), 200, headers=headers, media_type=media_type(path))
    first, last = span
    headers["Content-Length"] = str(last - first + 1)
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return StreamingResponse(_read(path, first, last - first + 1), 206, headers=headers, media_type=media_type(path))
