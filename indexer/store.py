"""The vector store: FAISS indexes published as immutable versions beside each other.

Layout of ``<data_dir>/index``::

    CURRENT          "v000003" -- replaced atomically; names the published version
    v000003/         a version folder, renamed into place whole, never modified afterwards
        index.faiss  IndexIDMap2 around an index_factory string; ids = clip ids; inner product
        meta.json    checkpoint id, factory, vector count, dim, created, default search parameters

Readers (the service) call ``open_published_index`` / ``load_published_index``: the index is memory-mapped
read-only, so replicas share one copy in the page cache, and a newer version never disturbs it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from filelock import FileLock

from .errors import IndexStoreError
from .vector_index import IdSet, default_search_params, index_ids, search

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
META_FILE = "meta.json"
CURRENT_FILE = "CURRENT"
LOCK_FILE = ".lock"
VERSION_RE = re.compile(r"^v(\d{6,})$")

KEEP_VERSIONS = 3


@dataclass(frozen=True)
class IndexMeta:
    """What a published version holds and what made it."""

    version: int
    checkpoint_id: str
    factory: str
    vector_count: int
    dim: int
    created: str  # ISO 8601, UTC
    metric: str = "inner_product"
    auto_factory: bool = True  # chosen by size (may change as the collection grows), not by --factory
    search_defaults: dict[str, int] = field(default_factory=dict)  # e.g. {"nprobe": 64}
    path: Path = Path()  # the version folder

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["version"], data["path"]  # both follow from the folder name
        return data


@dataclass
class PublishedIndex:
    """A published version opened for reading: the memory-mapped index and its metadata."""

    index: faiss.Index
    meta: IndexMeta

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        only: IdSet | None = None,
        depth_boost: float = 1.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like ``vector_index.search``, with the version's default parameters where none are given, and the
        search depth (IVF lists, HNSW candidates) multiplied by ``depth_boost``."""
        nprobe = nprobe if nprobe is not None else self.meta.search_defaults.get("nprobe")
        ef_search = ef_search if ef_search is not None else self.meta.search_defaults.get("efSearch")
        if depth_boost != 1.0:
            nprobe = math.ceil(nprobe * depth_boost) if nprobe is not None else None
            ef_search = max(k, math.ceil(ef_search * depth_boost)) if ef_search is not None else None
        return search(self.index, queries, k, nprobe=nprobe, ef_search=ef_search, only=only)

    def ids(self) -> np.ndarray:
        return index_ids(self.index)


# --- versions on disk ---------------------------------------------------------------------------------------


def index_dir_of(data_dir: str | Path) -> Path:
    return Path(data_dir).expanduser() / "index"


def list_versions(index_dir: Path) -> list[int]:
    if not index_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in index_dir.iterdir() if (m := VERSION_RE.match(p.name)) and p.is_dir())


def version_path(index_dir: Path, version: int) -> Path:
    return index_dir / f"v{version:06d}"


def current_version(index_dir: Path) -> int | None:
    """The published version number (``CURRENT``), or None when nothing was published."""
    try:
        text = (index_dir / CURRENT_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    match = VERSION_RE.match(text)
    if not match:
        raise IndexStoreError(f"{index_dir / CURRENT_FILE}: expected a version name like v000001, got {text!r}")
    return int(match.group(1))


def read_meta(index_dir: Path, version: int) -> IndexMeta:
    folder = version_path(index_dir, version)
    try:
        data = json.loads((folder / META_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise IndexStoreError(f"{folder / META_FILE}: cannot read the index metadata ({exc})") from exc
    return IndexMeta(version=version, path=folder, **data)


def current_meta(index_dir: Path) -> IndexMeta | None:
    version = current_version(index_dir)
    return None if version is None else read_meta(index_dir, version)


def read_index_file(path: Path, mmap: bool = True) -> faiss.Index:
    """Read an index file; memory-mapped read-only (zero-copy where the index type allows) with ``mmap``."""
    flags = 0
    if mmap:
        flags = getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP) | faiss.IO_FLAG_READ_ONLY
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as exc:
        raise IndexStoreError(f"{path}: cannot read the FAISS index ({exc})") from exc


def open_published_index(data_dir: str | Path, *, mmap: bool = True) -> tuple[faiss.Index, IndexMeta]:
    """The published index of ``data_dir`` (memory-mapped read-only) and its metadata.

    Raises ``IndexStoreError`` when nothing is published. Never mutate the returned index.
    """
    index_dir = index_dir_of(data_dir)
    for attempt in range(3):  # a version pruned between reading CURRENT and opening it: read CURRENT again
        meta = current_meta(index_dir)
        if meta is None:
            raise IndexStoreError(f"no published index in {index_dir}: run `tvr ingest` or `tvr index rebuild`")
        try:
            return read_index_file(meta.path / INDEX_FILE, mmap=mmap), meta
        except IndexStoreError:
            if attempt == 2 or (meta.path / INDEX_FILE).exists():
                raise
    raise AssertionError("unreachable")


def load_published_index(data_dir: str | Path, *, mmap: bool = True) -> PublishedIndex:
    index, meta = open_published_index(data_dir, mmap=mmap)
    return PublishedIndex(index, meta)


def publish(
    index_dir: Path,
    index: faiss.Index,
    *,
    checkpoint_id: str,
    factory: str,
    auto_factory: bool = True,
    search_defaults: dict[str, int] | None = None,
    keep: int = KEEP_VERSIONS,
) -> IndexMeta:
    """Write ``index`` as a new version beside the old ones and make it current; prune old versions.

    The files are written into a temporary folder and fsynced, the folder is renamed to the next free
    version name (atomic; a concurrent publisher gets the next number), then ``CURRENT`` is replaced.
    """
    index_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=index_dir))
    try:
        meta = IndexMeta(
            version=0,
            checkpoint_id=checkpoint_id,
            factory=factory,
            auto_factory=auto_factory,
            vector_count=int(index.ntotal),
            dim=int(index.d),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            search_defaults=dict(search_defaults if search_defaults is not None else default_search_params(index)),
        )
        faiss.write_index(index, str(staging / INDEX_FILE))
        _fsync_file(staging / INDEX_FILE)
        _write_durably(staging / META_FILE, json.dumps(meta.to_json(), indent=2) + "\n")
        _fsync_dir(staging)
        version = max(list_versions(index_dir), default=0) + 1
        while True:
            try:
                os.rename(staging, version_path(index_dir, version))
                break
            except OSError:
                if not version_path(index_dir, version).exists():
                    raise
                version += 1
        _fsync_dir(index_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace_durably(index_dir / CURRENT_FILE, f"v{version:06d}\n")
    published = read_meta(index_dir, version)
    log.info("published index v%06d: %d vectors, %s, dim %d", version, meta.vector_count, factory, meta.dim)
    prune(index_dir, keep=keep)
    return published


def prune(index_dir: Path, keep: int = KEEP_VERSIONS, stale_staging_s: float = 86_400) -> list[int]:
    """Delete all but the ``keep`` newest versions (never the current one) and old staging folders."""
    current = current_version(index_dir)
    versions = list_versions(index_dir)
    doomed = [v for v in versions[: max(0, len(versions) - keep)] if v != current]
    for version in doomed:
        shutil.rmtree(version_path(index_dir, version), ignore_errors=True)
    now = time.time()
    for staging in index_dir.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if now - staging.stat().st_mtime > stale_staging_s:
                shutil.rmtree(staging, ignore_errors=True)
    return doomed


@contextlib.contextmanager
def publish_lock(index_dir: Path) -> Iterator[None]:
    """Serialise build-and-publish between processes sharing a data directory (an advisory file lock)."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(index_dir / LOCK_FILE):
        yield


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _replace_durably(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
