"""Building an index from stored embeddings: train on a sample, add everything, calibrate the search depth.

The source of the vectors is a function, so the catalog (``sync``) and the benchmarks build the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import faiss
import numpy as np

from . import vector_index
from .calibration import PROBE_QUERIES, RecallProbe, calibrate
from .errors import IndexerError

log = logging.getLogger(__name__)

Batches = Iterator[tuple[np.ndarray, np.ndarray]]  # (ids int64 [n], vectors float32 [n, d])
FetchFn = Callable[[np.ndarray], Batches]  # sorted ids -> their vectors, in batches


def build_index(
    ids: np.ndarray, dim: int, factory: str, fetch: FetchFn, use_gpu: bool = False
) -> tuple[faiss.Index, dict[str, int] | None]:
    """A new ``factory`` index of the vectors of ``ids`` (trained on a random sample where it needs
    training) and its default search parameters: for approximate indexes the smallest depth that reaches
    the target recall on a sample of the collection (calibration.py); None for exact ones."""
    index = vector_index.new_index(dim, factory)
    rng = np.random.default_rng(0)
    if not index.is_trained:
        size = vector_index.training_sample_size(index, len(ids))
        if size == 0:
            raise IndexerError(f"factory {factory!r} needs training data, but the catalog has no clips")
        sample_ids = np.sort(rng.choice(ids, size=size, replace=False))
        vector_index.train_index(index, np.concatenate([v for _, v in fetch(sample_ids)]), use_gpu=use_gpu)
    probe = None
    if vector_index.is_approximate(index) and len(ids):
        query_ids = np.sort(rng.choice(ids, size=min(PROBE_QUERIES, len(ids)), replace=False))
        probe = RecallProbe(query_ids, np.concatenate([v for _, v in fetch(query_ids)]))

    def batches() -> Batches:
        for batch in fetch(ids):
            if probe is not None:
                probe.update(*batch)  # exact neighbours of the sample queries, on the way
            yield batch

    added = vector_index.add_vectors(index, batches())
    log.info("built %s index of %d vectors", factory, added)
    return index, (calibrate(index, probe) or None) if probe is not None else None
