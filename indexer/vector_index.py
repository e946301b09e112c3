"""FAISS index operations: choosing an index type for a collection, building, searching, inspecting.

Nothing here touches the disk; published versions live in ``store``. Indexes are ``IndexIDMap2`` around an
``index_factory`` string, inner product on L2-normalised vectors, ids = catalog clip ids.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Iterable

import faiss
import numpy as np

from .errors import IndexStoreError

log = logging.getLogger(__name__)

FLAT_MAX_VECTORS = 100_000  # exact search below this many vectors (a few ms per query at dim 512)
IVF_FLAT_MAX_BYTES = 1 << 30  # raw vectors beyond this -> IVF with 16-bit float codes (half the bytes)
IVF_FP16_MAX_BYTES = 4 << 30  # 16-bit codes beyond this -> IVF with 8-bit scalar codes (a quarter)
IVF_SQ8_MAX_BYTES = 16 << 30  # 8-bit codes beyond this -> IVF with PQ codes
TRAIN_POINTS_PER_LIST = 50  # IVF training sample: this many vectors per list (faiss warns below 39)


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


def search_parameters(
    index: faiss.Index, *, nprobe: int | None = None, ef_search: int | None = None
) -> faiss.SearchParameters | None:
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
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    *,
    nprobe: int | None = None,
    ef_search: int | None = None,
    only: IdSet | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, clip ids) per query row, best first; ids are -1 where fewer than ``k`` exist.
    ``only`` restricts the search to those ids (FAISS skips the others while it scans)."""
    queries = _query_rows(index, queries)
    params = search_parameters(index, nprobe=nprobe, ef_search=ef_search)
    if only is not None:
        if params is None:  # an IVF keeps its own nprobe (SearchParametersIVF's default would be 1)
            inner = core_index(index)
            ivf = isinstance(inner, faiss.IndexIVF)
            params = faiss.SearchParametersIVF(nprobe=int(inner.nprobe)) if ivf else faiss.SearchParameters()
        params.sel = only.selector
    return index.search(queries, int(k), params=params)


def search_exactly_among(
    index: faiss.Index, queries: np.ndarray, k: int, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` among ``ids`` by exhaustive scoring of their stored vectors (as the index holds them: an
    IVF's codes are decoded), for when few ids match; same shape and padding as ``search``. Scored by FAISS
    rather than numpy: numpy's OpenBLAS threads keep spinning after a product and slowed the query encoder's
    next call threefold on two cores (docs/BENCHMARKS.md, "Filtered search")."""
    queries = _query_rows(index, queries)
    found_scores = np.full((len(queries), int(k)), -np.inf, dtype=np.float32)
    found_ids = np.full((len(queries), int(k)), -1, dtype=np.int64)
    count = min(int(k), len(ids))
    if count == 0:
        return found_scores, found_ids
    scores, rows = faiss.knn(queries, reconstruct(index, ids), count, metric=faiss.METRIC_INNER_PRODUCT)
    found_scores[:, :count] = scores
    found_ids[:, :count] = np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)
    return found_scores, found_ids


def similar_pairs(vectors: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Per row of ``vectors``, the rows whose inner product with it is at least ``threshold`` (itself
    included), by FAISS's range search (no numpy product: see ``search_exactly_among``)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    limits, _, rows = flat.range_search(vectors, float(np.nextafter(np.float32(threshold), np.float32(-1))))
    return [rows[limits[i] : limits[i + 1]] for i in range(len(vectors))]


def reconstruct(index: faiss.Index, ids: np.ndarray) -> np.ndarray:
    """float32 [len(ids), d]: the vectors the index holds for these ids (``allow_reconstruct`` first)."""
    if len(ids) == 0:
        return np.empty((0, index.d), dtype=np.float32)
    return index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))


def allow_reconstruct(index: faiss.Index) -> None:
    """Let ``reconstruct`` read vectors by id: an IVF needs its direct map (8 bytes a vector, in memory;
    the lists themselves stay memory-mapped and untouched)."""
    inner = core_index(index)
    if isinstance(inner, faiss.IndexIVF) and inner.direct_map.type == faiss.DirectMap.NoMap:
        inner.make_direct_map()


def _query_rows(index: faiss.Index, queries: np.ndarray) -> np.ndarray:
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    if queries.shape[1] != index.d:
        raise ValueError(f"queries have dimension {queries.shape[1]}, the index holds dimension {index.d}")
    return queries


class IdSet:
    """A set of clip ids: a sorted array, and FAISS's search selector over it (a bitmap of one bit per id up
    to the largest, made on first use)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.unique(np.asarray(ids, dtype=np.int64))
        self._bitmap: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @functools.cached_property
    def selector(self) -> faiss.IDSelector:
        bits = np.zeros(int(self.ids[-1]) + 1 if len(self.ids) else 1, dtype=bool)
        bits[self.ids] = True
        self._bitmap = np.packbits(bits, bitorder="little")  # kept alive: the selector points into it
        return faiss.IDSelectorBitmap(len(self._bitmap), faiss.swig_ptr(self._bitmap))
