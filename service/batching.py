"""Searches from concurrent requests answered together, in batches, on one thread.

Requests call ``await batcher.search(inputs, options, index)`` from the event loop: each input is a text, or
a ``QueryInput`` (an example's embedding, alone or mixed with a text). Each becomes a job
on a queue that one task drains: it takes the first waiting job, gives others ``wait_s`` to arrive (while
a batch is running they pile up anyway) and hands up to ``max_batch`` of them to the batcher's thread.
There the texts missing from the LRU cache of embeddings are encoded in one call, and ``search_fn`` answers
all the jobs at once (one FAISS call per index and depth, one catalog query: ``service.search``).

Everything that runs torch or FAISS runs on that one thread, the encoder's loading included (``run``):
libgomp gives every thread that starts parallel work its own pool of OpenMP threads, and once it manages
more threads than there are cores it makes them sleep after each operation instead of spinning. A query
then took twice as long, and concurrent searches on many threads fought the encoder for the two cores
(docs/BENCHMARKS.md, "Search service").

A batch isolates its requests: when encoding or searching the batch fails (or answers with the wrong
number of results), each of its queries is answered again on its own, so only the query that fails gets
the error. A request waits at most ``timeout_s``: then it gets ``SearchUnavailable`` (a 503), and a batch
that has not finished by then is abandoned to its thread, which is replaced. The draining task restarts
itself if anything outside its guarded part ever ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
from cachetools import LRUCache

from .metrics import Metrics

log = logging.getLogger(__name__)

EncodeFn = Callable[[list[str]], np.ndarray]
T = TypeVar("T")
Options = TypeVar("Options")
Index = TypeVar("Index")
Result = TypeVar("Result")


class SearchUnavailable(Exception):
    """A search could not be answered in time (or the server is stopping); the message says why."""


def cache_key(text: str) -> str:
    """Texts the tokenizer cannot tell apart (whitespace runs, outer spaces) share one entry."""
    return " ".join(text.split())


@dataclass(frozen=True)
class Query(Generic[Index, Options]):
    """One text's search, as ``search_fn`` receives it: its embedding, the index to search, the options."""

    vector: np.ndarray
    index: Index
    options: Options


@dataclass(frozen=True)
class QueryInput:
    """What one search looks for: words, the embedding of an example (an image, a clip), or both; then the
    query vector is ``example_weight`` of the example and the rest of the text, normalised again."""

    text: str | None = None
    example: np.ndarray | None = None  # float32 [dim], L2-normalised
    example_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.text is None and self.example is None:
            raise ValueError("a query needs a text or an example")


class CannotMix(ValueError):
    """A text and an example whose mixture is no direction at all."""


def mixed(example: np.ndarray, text: np.ndarray, example_weight: float) -> np.ndarray:
    """``example_weight`` of one unit vector and the rest of the other, L2-normalised (float32)."""
    vector = example_weight * example.astype(np.float32) + (1.0 - example_weight) * text.astype(np.float32)
    norm = float(np.linalg.norm(vector))
    if norm < 1e-6:  # opposite vectors mixed half and half: nothing left to search for
        raise CannotMix("the text and the example cancel out; change image_weight")
    return (vector / norm).astype(np.float32)


@dataclass
class _Job:
    key: str | None  # the text's cache key; None for an example alone
    query: QueryInput
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
        timeout_s: float = 30.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._encode_fn = encode_fn
        self._search_fn = search_fn
        self.metrics = metrics or Metrics()
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.timeout_s = timeout_s
        self.cache: LRUCache[str, np.ndarray] | None = LRUCache(cache_size) if cache_size > 0 else None
        self._cache_lock = threading.Lock()
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: list[_Job] = []  # the batch being answered
        self._closing = False
        self._threads_started = 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = self._new_thread()
        self._start_draining()

    def _new_thread(self) -> ThreadPoolExecutor:
        self._threads_started += 1
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tvr-queries-{self._threads_started}")

    def _start_draining(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="tvr-query-batches")
        self._task.add_done_callback(self._drain_ended)

    def _drain_ended(self, task: asyncio.Task[None]) -> None:
        if self._closing or task.cancelled():
            return
        log.error("the query batching loop ended (%r); restarting it", task.exception())
        self._fail(self._in_flight, SearchUnavailable("the search loop failed while answering; try again"))
        self._in_flight = []
        self._start_draining()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the batcher's thread (between batches): load the encoder with it."""
        if self._executor is None:
            raise RuntimeError("QueryBatcher.start() was not awaited")
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))

    async def text_vector(self, text: str) -> np.ndarray:
        """One text's embedding, from the query cache or encoded on the search thread between batches."""
        key = cache_key(text)
        vector = (await self.run(self._vectors, [key]))[key]
        if isinstance(vector, Exception):
            raise vector
        return vector

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        waiting = list(self._in_flight)
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        self._fail(waiting, SearchUnavailable("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def search(self, inputs: Sequence[str | QueryInput], options: Options, index: Index) -> list[Result]:
        """One result per input, in order; ``SearchUnavailable`` after ``timeout_s`` without an answer."""
        if self._queue is None:
            raise RuntimeError("QueryBatcher.start() was not awaited")
        loop = asyncio.get_running_loop()
        queries = [QueryInput(text=item) if isinstance(item, str) else item for item in inputs]
        jobs = [
            _Job(cache_key(q.text) if q.text is not None else None, q, index, options, loop.create_future())
            for q in queries
        ]
        for job in jobs:
            self._queue.put_nowait(job)
        try:
            return list(await asyncio.wait_for(asyncio.gather(*(job.future for job in jobs)), self.timeout_s))
        except asyncio.TimeoutError:
            raise SearchUnavailable(
                f"no answer within {self.timeout_s:g} s (TVR_SEARCH_TIMEOUT_S): the search thread is busy or stuck"
            ) from None

    # --- the draining task (event loop) ------------------------------------------------------------------

    async def _drain(self) -> None:
        assert self._queue is not None
        while True:
            batch = await self._next_batch(self._queue)
            if not batch:
                continue
            self._in_flight = batch
            try:
                results = await self._answer_in_thread(batch)
                if len(results) != len(batch):  # a bug in _answer: never leave a request waiting
                    raise RuntimeError(f"{len(results)} answers for {len(batch)} queries")
                for job, result in zip(batch, results, strict=True):
                    self._settle(job, result)
            except Exception as exc:
                log.exception("answering %d queries failed", len(batch))
                self._fail(batch, exc)
            finally:
                self._in_flight = []

    async def _next_batch(self, queue: asyncio.Queue[_Job]) -> list[_Job]:
        batch = [await queue.get()]
        if self.wait_s > 0 and queue.qsize() < self.max_batch - 1:
            await asyncio.sleep(self.wait_s)
        while len(batch) < self.max_batch and not queue.empty():
            batch.append(queue.get_nowait())
        return [job for job in batch if not job.future.done()]  # requests that gave up meanwhile

    async def _answer_in_thread(self, batch: list[_Job]) -> list[Result | Exception]:
        """``_answer`` on the batcher's thread; a batch still running after ``timeout_s`` is abandoned to its
        thread and a fresh thread takes the next ones."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._executor, self._answer, batch), self.timeout_s)
        except asyncio.TimeoutError:
            log.error("a batch of %d queries ran for over %g s: abandoned to its thread", len(batch), self.timeout_s)
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            self._executor = self._new_thread()
            return [SearchUnavailable(f"the search took over {self.timeout_s:g} s and was abandoned")] * len(batch)

    @staticmethod
    def _settle(job: _Job, result: object) -> None:
        if job.future.done():
            return
        if isinstance(result, Exception):
            job.future.set_exception(result)
        else:
            job.future.set_result(result)

    @staticmethod
    def _fail(jobs: list[_Job], error: Exception) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(error)

    # --- the batcher's thread --------------------------------------------------------------------------------

    def _answer(self, batch: list[_Job]) -> list[Result | Exception]:
        """One result or exception per job: text embeddings (cached or encoded together) mixed with any
        example, then one search_fn call; what fails together is tried again one query at a time."""
        texts = self._vectors([job.key for job in batch if job.key is not None])
        answers: list[Result | Exception] = [Exception("unanswered")] * len(batch)
        queries: list[tuple[int, Query[Index, Options]]] = []
        for i, job in enumerate(batch):
            try:
                vector = self._query_vector(job, texts)
            except Exception as exc:
                answers[i] = exc
            else:
                queries.append((i, Query(vector, job.index, job.options)))
        for (i, _), answer in zip(queries, self._searched([q for _, q in queries]), strict=True):
            answers[i] = answer
        return answers

    @staticmethod
    def _query_vector(job: _Job, texts: dict[str, np.ndarray | Exception]) -> np.ndarray:
        text = texts[job.key] if job.key is not None else None
        if isinstance(text, Exception):
            raise text
        example = job.query.example
        if example is None:
            assert text is not None
            return text
        if text is None:
            return np.ascontiguousarray(example, dtype=np.float32)
        return mixed(example, text, job.query.example_weight)

    def _searched(self, queries: list[Query[Index, Options]]) -> list[Result | Exception]:
        if not queries:
            return []
        try:
            results: list[Result | Exception] = list(self._search_fn(queries))
            if len(results) != len(queries):
                raise RuntimeError(f"the search answered {len(results)} results for {len(queries)} queries")
            return results
        except Exception as exc:
            if len(queries) == 1:
                log.warning("a search failed: %s: %s", type(exc).__name__, exc)
                return [exc]
            log.warning("a batch of %d searches failed (%s); answering each alone", len(queries), exc)
            return [answer for query in queries for answer in self._searched([query])]

    def _vectors(self, keys: list[str]) -> dict[str, np.ndarray | Exception]:
        cache = self.cache
        found: dict[str, np.ndarray | Exception] = {}
        if cache is not None:
            with self._cache_lock:  # an abandoned thread may still finish its batch beside the new one
                found = {key: vector for key in set(keys) if (vector := cache.get(key)) is not None}
        missing = sorted(set(keys) - found.keys())
        hits = sum(key in found for key in keys)  # a text twice in one batch counts twice
        self.metrics.query_cache.labels("hit").inc(hits)
        self.metrics.query_cache.labels("miss").inc(len(keys) - hits)
        if missing:
            found.update(self._encoded(missing))
        return found

    def _encoded(self, texts: list[str]) -> dict[str, np.ndarray | Exception]:
        """Embeddings of ``texts`` in one encoder call; if that fails, each text alone, so only the texts
        that fail get the error."""
        started = time.perf_counter()
        try:
            encoded = self._encode_fn(texts)
            if len(encoded) != len(texts):
                raise RuntimeError(f"the encoder answered {len(encoded)} embeddings for {len(texts)} texts")
        except Exception as exc:
            if len(texts) == 1:
                log.warning("a query could not be encoded: %s: %s", type(exc).__name__, exc)
                return {texts[0]: exc}
            return {key: value for text in texts for key, value in self._encoded([text]).items()}
        self.metrics.encode_seconds.observe(time.perf_counter() - started)
        self.metrics.encode_batch.observe(len(texts))
        vectors: dict[str, np.ndarray | Exception] = {}
        for text, row in zip(texts, encoded, strict=True):
            vector = np.ascontiguousarray(row, dtype=np.float32)
            vector.setflags(write=False)
            vectors[text] = vector
            if self.cache is not None:
                with self._cache_lock:
                    self.cache[text] = vector
        return vectors
