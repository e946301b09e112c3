"""The URLs that answers link to (relative, so they work behind any host name or proxy prefix)."""

from __future__ import annotations


def media_url(video_id: int, start: float | None = None, end: float | None = None) -> str:
    """The video file; with ``start``, a ``#t=start,end`` media fragment so players begin there."""
    url = f"/videos/{video_id}/media"
    return url if start is None else f"{url}#t={start:.3f},{end:.3f}"


def thumbnail_url(clip_id: int) -> str:
    return f"/clips/{clip_id}/thumbnail"
