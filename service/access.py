"""What a client may see: which files may be served, and how a video's path is shown.

Only videos the catalog indexed are ever served, and with ``TVR_MEDIA_ROOTS`` only files inside those
folders: the catalog stores canonical paths (symlinks resolved when ingested), and the file is resolved
again when it is opened, so a link planted later cannot lead outside. Paths in answers are relative to
their media root (the file name alone when no roots are configured); a request with the admin key sees the
server's absolute paths, as the person who ingested them does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from indexer.catalog import VideoStatus


@dataclass(frozen=True)
class Viewer:
    """Who asks: ``admin`` when the request carries the admin key."""

    admin: bool = False


def root_of(path: str, roots: Sequence[Path]) -> Path | None:
    """The media root holding ``path`` (compared as text: catalog paths are canonical), or None."""
    for root in roots:
        prefix = str(root).rstrip(os.sep) + os.sep
        if path.startswith(prefix):
            return root
    return None


def inside_roots(path: str, roots: Sequence[Path]) -> bool:
    """True when no roots are configured or ``path`` lies in one of them."""
    return not roots or root_of(path, roots) is not None


def servable_file(path: str, status: VideoStatus, roots: Sequence[Path]) -> Path | None:
    """The file to stream for a catalog video, or None: it must be indexed, exist, and lie (after resolving
    links now) inside the media roots."""
    if status != VideoStatus.indexed or not inside_roots(path, roots):
        return None
    real = Path(os.path.realpath(path))
    if not real.is_file() or not inside_roots(str(real), roots):
        return None
    return real


def shown_path(path: str, roots: Sequence[Path], viewer: Viewer) -> str:
    """How a video's path appears in an answer to ``viewer``."""
    if viewer.admin:
        return path
    root = root_of(path, roots)
    if root is None:
        return Path(path).name
    return Path(path).relative_to(root).as_posix()


def thumbnail_path(thumbnails_dir: Path, relative: str | None) -> Path | None:
    """A clip's JPEG (``Clip.thumbnail``, relative to the thumbnails folder), or None; never a path outside
    ``thumbnails_dir``."""
    if not relative:
        return None
    root = thumbnails_dir.resolve()
    path = (root / relative).resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path
