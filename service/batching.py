"""Query embeddings: concurrent queries encoded together in small batches, recent ones cached.

Requests call ``await encoder.encode(texts)`` from the event loop. A text in the LRU cache is answered at
once; the others join a queue that one task drains: it takes the first waiting text, gives others
``wait_s`` to arrive (while the encoder is busy they pile up anyway), and encodes up to ``max_batch`` of
them in one call on a dedicated thread, so torch never runs two batches at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .metrics import Metrics

log = logging.getLogger(__name__)

EncodeFn = Callable[[list[str]], np.ndarray]


def cache_key(text: str) -> str:
    """Texts the tokenizer cannot tell apart (whitespace runs, outer spaces) share one entry."""
    return " ".join(text.split())


class EmbeddingCache:
    """A least-recently-used map of text -> embedding (used from the event loop only)."""

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

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class QueryEncoder:
    """Batches and caches calls of ``encode_fn`` (texts -> float32 [n, dim] L2-normalised rows)."""

    def __init__(
        self,
        encode_fn: EncodeFn,
        *,
        max_batch: int = 16,
        wait_s: float = 0.001,
        cache_size: int = 4096,
        metrics: Metrics | None = None,
    ) -> None:
        self._encode_fn = encode_fn
        self.metrics = metrics or Metrics()
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.cache = EmbeddingCache(cache_size)
        self._queue: asyncio.Queue[str] | None = None
        self._pending: dict[str, asyncio.Future[np.ndarray]] = {}  # texts queued or being encoded
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tvr-encoder")
        self._task = asyncio.create_task(self._drain(), name="tvr-query-batches")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))
        self._pending.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` in order, [len(texts), dim] float32."""
        if self._queue is None:
            raise RuntimeError("QueryEncoder.start() was not awaited")
        loop = asyncio.get_running_loop()
        rows: list[np.ndarray | asyncio.Future[np.ndarray]] = []
        for text in texts:
            key = cache_key(text)
            vector = self.cache.get(key)
            if vector is not None:
                self.metrics.query_cache.labels("hit").inc()
                rows.append(vector)
                continue
            self.metrics.query_cache.labels("miss").inc()
            future = self._pending.get(key)
            if future is None:
                future = loop.create_future()
                self._pending[key] = future
                self._queue.put_nowait(key)
            rows.append(future)
        # shield: one request giving up must not cancel a text another request waits for too
        return np.stack([row if isinstance(row, np.ndarray) else await asyncio.shield(row) for row in rows])

    async def _drain(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            if self.wait_s > 0 and self._queue.qsize() < self.max_batch - 1:
                await asyncio.sleep(self.wait_s)
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            started = time.perf_counter()
            try:
                vectors = await loop.run_in_executor(self._executor, self._encode_fn, batch)
            except Exception as exc:  # every waiting request gets the error; the loop goes on
                log.exception("encoding %d queries failed", len(batch))
                for key in batch:
                    future = self._pending.pop(key)
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.metrics.encode_seconds.observe(time.perf_counter() - started)
            self.metrics.encode_batch.observe(len(batch))
            for key, vector in zip(batch, vectors, strict=True):
                vector = np.ascontiguousarray(vector, dtype=np.float32)
                vector.setflags(write=False)
                self.cache.put(key, vector)
                future = self._pending.pop(key)
                if not future.done():
                    future.set_result(vector)
