"""Searches from concurrent requests answered together, in batches, on one thread.

Requests call ``await batcher.search(texts, options, index)`` from the event loop. Each text becomes a job
on a queue that one task drains: it takes the first waiting job, gives others ``wait_s`` to arrive (while
a batch is running they pile up anyway) and hands up to ``max_batch`` of them to the batcher's thread.
There the texts missing from the LRU cache of embeddings are encoded in one call, and ``search_fn`` answers
all the jobs at once (one FAISS call per index and depth, one catalog query: ``service.search``).

Everything that runs torch or FAISS runs on that one thread, the encoder's loading included (``run``):
libgomp gives every thread that starts parallel work its own pool of OpenMP threads, and once it manages
more threads than there are cores it makes them sleep after each operation instead of spinning. A query
then took twice as long, and concurrent searches on many threads fought the encoder for the two cores
(docs/BENCHMARKS.md, "Search service").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from .metrics import Metrics

log = logging.getLogger(__name__)

EncodeFn = Callable[[list[str]], np.ndarray]
T = TypeVar("T")
Options = TypeVar("Options")
Index = TypeVar("Index")
Result = TypeVar("Result")


def cache_key(text: str) -> str:
    """Texts the tokenizer cannot tell apart (whitespace runs, outer spaces) share one entry."""
    return " ".join(text.split())


class EmbeddingCache:
    """A least-recently-used map of text -> embedding (used from the batcher's thread only)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str) -> np.ndarray | None:
        vector = self._items.get(key)
        if vector is not None:
            self._items.move_to_end(key)
        return vector

    def put(self, key: str, vector: np.ndarray) -> None:
        if self.capacity <= 0:
            return
        self._items[key] = vector
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Query(Generic[Index, Options]):
    """One text's search, as ``search_fn`` receives it: its embedding, the index to search, the options."""

    vector: np.ndarray
    index: Index
    options: Options


@dataclass
class _Job:
    key: str
    index: Any
    options: Any
    future: asyncio.Future[Any]


class QueryBatcher(Generic[Index, Options, Result]):
    """Batches searches: ``encode_fn`` (texts -> float32 [n, dim] L2-normalised rows) on the texts, then
    ``search_fn`` (a list of ``Query`` -> one result each, in order) on the whole batch."""

    def __init__(
        self,
        encode_fn: EncodeFn,
        search_fn: Callable[[list[Query[Index, Options]]], Sequence[Result]],
        *,
        max_batch: int = 16,
        wait_s: float = 0.0,
        cache_size: int = 4096,
        metrics: Metrics | None = None,
    ) -> None:
        self._encode_fn = encode_fn
        self._search_fn = search_fn
        self.metrics = metrics or Metrics()
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.cache = EmbeddingCache(cache_size)
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: list[_Job] = []  # the batch being answered

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tvr-queries")
        self._task = asyncio.create_task(self._drain(), name="tvr-query-batches")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the batcher's thread (between batches): load the encoder with it."""
        if self._executor is None:
            raise RuntimeError("QueryBatcher.start() was not awaited")
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        waiting = list(self._in_flight)
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for job in waiting:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def search(self, texts: Sequence[str], options: Options, index: Index) -> list[Result]:
        """One result per text, in order."""
        if self._queue is None:
            raise RuntimeError("QueryBatcher.start() was not awaited")
        loop = asyncio.get_running_loop()
        jobs = [_Job(cache_key(text), index, options, loop.create_future()) for text in texts]
        for job in jobs:
            self._queue.put_nowait(job)
        return list(await asyncio.gather(*(job.future for job in jobs)))

    async def _drain(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            if self.wait_s > 0 and self._queue.qsize() < self.max_batch - 1:
                await asyncio.sleep(self.wait_s)
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [job for job in batch if not job.future.done()]  # requests that gave up meanwhile
            if not batch:
                continue
            self._in_flight = batch
            try:
                results = await loop.run_in_executor(self._executor, self._answer, batch)
            except Exception as exc:  # every request of the batch gets the error; the loop goes on
                log.exception("answering %d queries failed", len(batch))
                results = [exc] * len(batch)
            finally:
                self._in_flight = []
            for job, result in zip(batch, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(result, Exception):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def _answer(self, batch: list[_Job]) -> Sequence[Result]:
        """On the batcher's thread: embeddings (cached or encoded together), then one search_fn call."""
        vectors = self._vectors([job.key for job in batch])
        return self._search_fn(
            [Query(vector, job.index, job.options) for vector, job in zip(vectors, batch, strict=True)]
        )

    def _vectors(self, keys: list[str]) -> list[np.ndarray]:
        found = {key: vector for key in set(keys) if (vector := self.cache.get(key)) is not None}
        missing = sorted(set(keys) - found.keys())
        hits = sum(key in found for key in keys)  # a text twice in one batch counts twice
        self.metrics.query_cache.labels("hit").inc(hits)
        self.metrics.query_cache.labels("miss").inc(len(keys) - hits)
        if missing:
            started = time.perf_counter()
            encoded = self._encode_fn(missing)
            self.metrics.encode_seconds.observe(time.perf_counter() - started)
            self.metrics.encode_batch.observe(len(missing))
            for key, vector in zip(missing, encoded, strict=True):
                vector = np.ascontiguousarray(vector, dtype=np.float32)
                vector.setflags(write=False)
                found[key] = vector
                self.cache.put(key, vector)
        return [found[key] for key in keys]
