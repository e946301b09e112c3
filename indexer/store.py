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
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .errors import IndexStoreError

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
META_FILE = "meta.json"
CURRENT_FILE = "CURRENT"
LOCK_FILE = ".lock"
VERSION_RE = re.compile(r"^v(\d{6,})$")

FLAT_MAX_VECTORS = 100_000  # exact search below this many vectors (a few ms per query at dim 512)
IVF_FLAT_MAX_BYTES = 1 << 30  # raw vectors beyond this -> IVF with 16-bit float codes (half the bytes)
IVF_FP16_MAX_BYTES = 4 << 30  # 16-bit codes beyond this -> IVF with 8-bit scalar codes (a quarter)
IVF_SQ8_MAX_BYTES = 16 << 30  # 8-bit codes beyond this -> IVF with PQ codes
TRAIN_POINTS_PER_LIST = 50  # IVF training sample: this many vectors per list (faiss warns below 39)
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


# --- choosing and building -------------------------------------------------------------------------------


def choose_factory(num_vectors: int, dim: int) -> str:
    """The index type for a collection: exact ``Flat`` while small, then IVF with ~4 sqrt(n) lists holding
    full vectors up to ``IVF_FLAT_MAX_BYTES``, 16-bit float codes (SQfp16: half the memory, scores as good
    as exact, as fast) up to ``IVF_FP16_MAX_BYTES``, 8-bit scalar codes (SQ8: a quarter of the memory; its
    rounding swaps near-ties, which capped recall@10 near 0.956 on the service benchmark) up to
    ``IVF_SQ8_MAX_BYTES``, PQ codes of dim/8 bytes past that (docs/BENCHMARKS.md). The search depth is
    calibrated on the data when the index is built (calibration.py); ``bench/index_build.py --base``
    measures your own embeddings."""
    if num_vectors < FLAT_MAX_VECTORS:
        return "Flat"
    nlist = 1 << max(4, round(math.log2(4 * math.sqrt(num_vectors))))
    if num_vectors * dim * 4 <= IVF_FLAT_MAX_BYTES:
        return f"IVF{nlist},Flat"
    if num_vectors * dim * 2 <= IVF_FP16_MAX_BYTES:
        return f"IVF{nlist},SQfp16"
    if num_vectors * dim <= IVF_SQ8_MAX_BYTES:
        return f"IVF{nlist},SQ8"
    m = next(m for m in (dim // 8, dim // 4, dim // 2, dim) if m > 0 and dim % m == 0)
    return f"IVF{nlist},PQ{m}"


def default_search_params(index: faiss.Index) -> dict[str, int]:
    """Per-call defaults (recorded with each version; the service may pass others): IVF probes 1/32 of its
    lists (at least 16), HNSW explores 256 candidates. Measured in docs/BENCHMARKS.md."""
    inner = core_index(index)
    if isinstance(inner, faiss.IndexIVF):
        return {"nprobe": int(min(inner.nlist, max(16, inner.nlist // 32)))}
    if isinstance(inner, faiss.IndexHNSW):
        return {"efSearch": 256}
    return {}


def new_index(dim: int, factory: str) -> faiss.Index:
    """An empty ``IndexIDMap2`` around ``factory`` (inner product)."""
    try:
        inner = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise IndexStoreError(
            f"--factory {factory!r} is not a FAISS index_factory string for dim {dim}: {exc}"
        ) from exc
    return faiss.IndexIDMap2(inner)


def train_index(index: faiss.Index, sample: np.ndarray, use_gpu: bool = False) -> None:
    """Train (IVF centroids, PQ codebooks) on ``sample``; on a GPU when asked for and faiss has one."""
    if index.is_trained:
        return
    inner = core_index(index)
    gpus = faiss.get_num_gpus() if use_gpu and hasattr(faiss, "index_cpu_to_all_gpus") else 0
    if gpus > 0 and isinstance(inner, faiss.IndexIVF):
        inner.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(index.d))
    started = time.perf_counter()
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    log.info("trained %s on %d vectors in %.1f s", type(inner).__name__, len(sample), time.perf_counter() - started)


def training_sample_size(index: faiss.Index, num_vectors: int) -> int:
    inner = core_index(index)
    if isinstance(inner, faiss.IndexIVF):
        return min(num_vectors, max(TRAIN_POINTS_PER_LIST * inner.nlist, 10_000))
    return min(num_vectors, 100_000)


def add_vectors(index: faiss.Index, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
    """Add (ids int64 [n], vectors float32 [n, d]) batches; returns how many were added."""
    added = 0
    for ids, vectors in batches:
        if len(ids):
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, np.int64))
            added += len(ids)
    return added


def index_ids(index: faiss.Index) -> np.ndarray:
    """The ids an ``IndexIDMap``/``IDMap2`` holds (int64, in insertion order)."""
    return faiss.vector_to_array(faiss.downcast_index(index).id_map).astype(np.int64, copy=False)


def is_approximate(index: faiss.Index) -> bool:
    """True for indexes whose results depend on a search depth (IVF, HNSW)."""
    return isinstance(core_index(index), faiss.IndexIVF | faiss.IndexHNSW)


def supports_remove(index: faiss.Index) -> bool:
    return not isinstance(core_index(index), faiss.IndexHNSW)


def core_index(index: faiss.Index) -> faiss.Index:
    """The index under the IDMap and any pre-transform (OPQ, PCA)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap | faiss.IndexIDMap2):
        index = faiss.downcast_index(index.index)
    if isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


# --- searching ---------------------------------------------------------------------------------------------


def search_parameters(index: faiss.Index, *, nprobe: int | None = None, ef_search: int | None = None):  # type: ignore[no-untyped-def]
    """``faiss.SearchParameters`` for one call (no shared state is changed, so concurrent searches are safe)."""
    inner = core_index(index)
    params = None
    if isinstance(inner, faiss.IndexIVF) and nprobe is not None:
        params = faiss.SearchParametersIVF(nprobe=int(nprobe))
    elif isinstance(inner, faiss.IndexHNSW) and ef_search is not None:
        params = faiss.SearchParametersHNSW(efSearch=int(ef_search))
    outer = faiss.downcast_index(index)
    wrapped = faiss.downcast_index(outer.index) if isinstance(outer, faiss.IndexIDMap | faiss.IndexIDMap2) else outer
    if params is not None and isinstance(wrapped, faiss.IndexPreTransform):
        params = faiss.SearchParametersPreTransform(index_params=params)
    return params


def search(
    index: faiss.Index, queries: np.ndarray, k: int, *, nprobe: int | None = None, ef_search: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, clip ids) per query row, best first; ids are -1 where fewer than ``k`` exist."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != index.d:
        raise ValueError(f"queries have dimension {queries.shape[1]}, the index holds dimension {index.d}")
    params = search_parameters(index, nprobe=nprobe, ef_search=ef_search)
    return index.search(queries, int(k), params=params)


@dataclass
class PublishedIndex:
    """A published version opened for reading: the memory-mapped index and its metadata."""

    index: faiss.Index
    meta: IndexMeta

    def search(
        self, queries: np.ndarray, k: int, *, nprobe: int | None = None, ef_search: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like ``search``, with the version's default parameters where none are given."""
        nprobe = nprobe if nprobe is not None else self.meta.search_defaults.get("nprobe")
        ef_search = ef_search if ef_search is not None else self.meta.search_defaults.get("efSearch")
        return search(self.index, queries, k, nprobe=nprobe, ef_search=ef_search)

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
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(index_dir / LOCK_FILE, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
