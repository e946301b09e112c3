"""Default search depth measured on the collection itself, so that an approximate index keeps its recall.

How many IVF lists a query must visit (``nprobe``) for a given recall depends on the data: on clustered
embeddings 1/128 of the lists finds the true top 10, on diffuse ones a quarter may not. When an index is
built, ``RecallProbe`` takes a sample of the stored vectors as queries, finds their exact neighbours while
the vectors stream past, and ``calibrate`` then picks the smallest depth whose recall@10 against that
exact answer reaches the target. Each query's own vector is left out of both answers, so a query is "a
clip like the stored ones" rather than a copy of one.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from .vector_index import core_index, search_parameters

log = logging.getLogger(__name__)

# The service's goal is recall@10 >= 0.95 for text queries. Stored vectors are easier queries than texts,
# which fall less centrally among the lists (1 to 3 points lower on the service benchmark): hence the margin.
TARGET_RECALL = 0.97
PROBE_QUERIES = 256
K = 10
MIN_NPROBE = 8


class RecallProbe:
    """Sample queries and their exact top ``K + 1`` (self included) over every vector shown to ``update``."""

    def __init__(self, query_ids: np.ndarray, queries: np.ndarray) -> None:
        self.query_ids = np.asarray(query_ids, dtype=np.int64)
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.scores = np.full((len(self.query_ids), K + 1), -np.inf, dtype=np.float32)
        self.ids = np.full((len(self.query_ids), K + 1), -1, dtype=np.int64)

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0 or len(self.query_ids) == 0:
            return
        scores = self.queries @ np.ascontiguousarray(vectors, dtype=np.float32).T  # (Q, n)
        keep = min(K + 1, scores.shape[1])
        top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        merged_scores = np.concatenate([self.scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        merged_ids = np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)[top]], axis=1)
        best = np.argsort(-merged_scores, axis=1, kind="stable")[:, : K + 1]
        self.scores = np.take_along_axis(merged_scores, best, axis=1)
        self.ids = np.take_along_axis(merged_ids, best, axis=1)

    def recall(self, found: np.ndarray) -> float:
        """Mean recall@K of ``found`` (Q, >= K + 1 ids, best first), each query's own id left out."""
        hits = 0
        total = 0
        for query_id, exact, approx in zip(self.query_ids, self.ids, found, strict=True):
            truth = [i for i in exact if i != query_id and i >= 0][:K]
            got = [i for i in approx if i != query_id and i >= 0][:K]
            hits += len(set(got).intersection(truth))
            total += len(truth)
        return hits / total if total else 1.0


def _depths(limit: int) -> list[int]:
    """8, 12, 16, 24, 32, 48, ... (steps of about sqrt 2) up to ``limit``, which is always included."""
    values, base = [], MIN_NPROBE
    while base < limit:
        values += [base, base * 3 // 2]
        base *= 2
    return sorted({v for v in values if v < limit} | {limit})


def calibrate(index: faiss.Index, probe: RecallProbe, target: float = TARGET_RECALL) -> dict[str, int]:
    """The smallest ``nprobe`` (IVF) or ``efSearch`` (HNSW) whose sample recall@10 reaches ``target``
    (the largest tried when none does); {} for exact indexes or without sample queries."""
    inner = core_index(index)
    if isinstance(inner, faiss.IndexIVF):
        name, depths = "nprobe", _depths(int(inner.nlist))
    elif isinstance(inner, faiss.IndexHNSW):
        name, depths = "efSearch", [32, 64, 128, 256, 512, 1024]
    else:
        return {}
    if len(probe.query_ids) == 0:
        return {}
    recall = 0.0
    for depth in depths:
        params = search_parameters(index, **{"nprobe" if name == "nprobe" else "ef_search": depth})
        _, found = index.search(probe.queries, K + 1, params=params)
        recall = probe.recall(found)
        if recall >= target:
            break
    log.info("search default %s=%d: recall@%d %.3f on %d sample queries", name, depth, K, recall, len(probe.query_ids))
    return {name: int(depth)}
