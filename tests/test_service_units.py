"""Plain parts of the service without a server: query batching and caching, byte ranges, log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import numpy as np
import pytest

from service.batching import Query, QueryBatcher, SearchUnavailable, cache_key
from service.logs import JsonFormatter, KeyValueFormatter
from service.media import RangeNotSatisfiable, parse_range


class SlowEncoder:
    """Deterministic 'embeddings' (the text's length and first byte), slow enough for requests to pile up."""

    def __init__(self, seconds: float = 0.03, fail_on: str | None = None) -> None:
        self.seconds, self.fail_on = seconds, fail_on
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        if self.fail_on in texts:
            raise ValueError(f"cannot encode {self.fail_on!r}")
        return np.array([[len(t), ord(t[0])] for t in texts], np.float32)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


class EchoSearch:
    """A search function that answers each query with (its embedding, its options, its index) and records
    the batches and threads it was called with."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, queries: list[Query]) -> list[tuple[np.ndarray, object, object]]:
        self.batches.append(len(queries))
        self.threads.add(threading.current_thread().name)
        return [(q.vector, q.options, q.index) for q in queries]


async def started(encoder: SlowEncoder, search: EchoSearch, **options) -> QueryBatcher:  # type: ignore[no-untyped-def]
    batcher = QueryBatcher(encoder, search, **options)
    await batcher.start()
    return batcher


def test_concurrent_queries_are_answered_together_in_bounded_batches_on_one_thread() -> None:
    fake, search = SlowEncoder(), EchoSearch()

    async def scenario() -> list[list]:
        batcher = await started(fake, search, max_batch=8, wait_s=0.005, cache_size=100)
        try:
            return await asyncio.gather(*(batcher.search([f"query number {i}"], i % 3, "index") for i in range(30)))
        finally:
            await batcher.close()

    results = run(scenario())
    for i, rows in enumerate(results):  # each request got its own text's embedding and its own options
        ((vector, options, index),) = rows
        assert vector[0] == len(f"query number {i}") and options == i % 3 and index == "index"
    sizes = [len(b) for b in fake.batches]
    assert sum(sizes) == 30 and max(sizes) <= 8 and search.batches == sizes
    assert len(fake.batches) <= 5, sizes  # 30 queued at once: full batches, not 30 calls
    # one thread for encoding and searching: torch and FAISS never run two batches at once
    assert len(fake.threads | search.threads) == 1


def test_a_request_of_several_queries_gets_them_in_order() -> None:
    fake, search = SlowEncoder(seconds=0.0), EchoSearch()

    async def scenario() -> list:
        batcher = await started(fake, search, max_batch=2, cache_size=0)
        try:
            return await batcher.search(["a", "bb", "ccc", "dddd", "eeeee"], "options", "index")
        finally:
            await batcher.close()

    assert [int(vector[0]) for vector, _, _ in run(scenario())] == [1, 2, 3, 4, 5]


def test_cache_answers_repeats_without_encoding_and_encodes_a_batch_s_twins_once() -> None:
    fake, search = SlowEncoder(seconds=0.01), EchoSearch()

    async def scenario() -> tuple[list, list, list]:
        batcher = await started(fake, search, max_batch=4, cache_size=2)
        try:
            first, twin = await asyncio.gather(
                batcher.search(["a red circle"], 0, 0), batcher.search(["a red circle"], 0, 0)
            )
            again = await batcher.search(["  a   red circle "], 0, 0)  # the same text for the tokenizer
            await batcher.search(["b"], 0, 0)
            await batcher.search(["c"], 0, 0)  # capacity 2: "a red circle" is evicted
            await batcher.search(["a red circle"], 0, 0)
            return first, twin, again
        finally:
            await batcher.close()

    first, twin, again = run(scenario())
    assert np.array_equal(first[0][0], twin[0][0]) and np.array_equal(first[0][0], again[0][0])
    encoded = [t for batch in fake.batches for t in batch]
    assert encoded.count("a red circle") == 2  # once for the twins and the repeat, once after eviction
    assert cache_key(" a\tred  circle\n") == "a red circle"


def test_a_failing_query_fails_its_own_request_only() -> None:
    fake, search = SlowEncoder(seconds=0.02, fail_on="boom"), EchoSearch()

    async def scenario() -> tuple[list[object], list]:
        batcher = await started(fake, search, max_batch=8, wait_s=0.01, cache_size=10)
        try:
            outcomes = await asyncio.gather(
                batcher.search(["boom"], 0, 0), batcher.search(["fine"], 0, 0), return_exceptions=True
            )
            later = await batcher.search(["later"], 0, 0)
            return outcomes, later
        finally:
            await batcher.close()

    (boom, fine), later = run(scenario())
    assert sorted(fake.batches[0]) == ["boom", "fine"]  # they were encoded together, and that failed
    assert isinstance(boom, ValueError) and "boom" in str(boom)
    assert fine[0][0][0] == len("fine")  # the innocent query was answered on its own
    assert later[0][0][0] == len("later")  # the loop goes on


class HostileSearch(EchoSearch):
    """Fails any batch holding the options "hostile"; answers the first batch with one result too few."""

    def __init__(self) -> None:
        super().__init__()
        self.short_once = True

    def __call__(self, queries: list[Query]) -> list[tuple[np.ndarray, object, object]]:
        if any(q.options == "hostile" for q in queries):
            raise RuntimeError("hostile options")
        answers = super().__call__(queries)
        if self.short_once and len(answers) > 1:
            self.short_once = False
            return answers[:-1]
        return answers


def test_a_failing_search_or_a_wrong_number_of_results_fails_no_innocent_request() -> None:
    fake, search = SlowEncoder(seconds=0.02), HostileSearch()

    async def scenario() -> list[object]:
        batcher = await started(fake, search, max_batch=8, wait_s=0.01, cache_size=0)
        try:
            first = await asyncio.gather(*(batcher.search([f"q{i}"], i, 0) for i in range(3)), return_exceptions=True)
            second = await asyncio.gather(
                batcher.search(["a"], "hostile", 0), batcher.search(["b"], "kind", 0), return_exceptions=True
            )
            return [*first, *second]
        finally:
            await batcher.close()

    q0, q1, q2, hostile, kind = run(scenario())
    assert search.batches[0] == 3  # the short answer came for the batch of three ...
    assert [answer[0][1] for answer in (q0, q1, q2)] == [0, 1, 2]  # ... and each was answered again alone
    assert isinstance(hostile, RuntimeError) and kind[0][1] == "kind"


def test_a_stuck_search_times_out_with_a_reason_and_the_next_ones_are_answered() -> None:
    release = threading.Event()

    class StuckOnce(EchoSearch):
        def __call__(self, queries: list[Query]) -> list[tuple[np.ndarray, object, object]]:
            if not self.batches:
                self.batches.append(-1)
                release.wait(10)
            return super().__call__(queries)

    fake, search = SlowEncoder(seconds=0.0), StuckOnce()

    async def scenario() -> tuple[object, list]:
        batcher = await started(fake, search, cache_size=0, timeout_s=0.3)
        try:
            stuck = await asyncio.gather(batcher.search(["stuck"], 0, 0), return_exceptions=True)
            after = await batcher.search(["after"], 0, 0)  # answered while the stuck call still hangs
            return stuck[0], after
        finally:
            release.set()
            await batcher.close()

    stuck, after = run(scenario())
    assert isinstance(stuck, SearchUnavailable) and "TVR_SEARCH_TIMEOUT_S" in str(stuck)
    assert after[0][0][0] == len("after")
    assert len(fake.threads | search.threads) == 2  # the stuck thread was replaced


def test_the_batching_loop_restarts_when_something_outside_its_guard_ends_it() -> None:
    fake, search = SlowEncoder(seconds=0.0), EchoSearch()

    class Fragile(QueryBatcher):
        broken = True

        async def _next_batch(self, queue):  # type: ignore[no-untyped-def]
            if self.broken:
                self.broken = False
                raise RuntimeError("the loop itself broke")
            return await super()._next_batch(queue)

    async def scenario() -> list:
        batcher = Fragile(fake, search, timeout_s=5)
        await batcher.start()
        try:
            return await batcher.search(["still answered"], 0, 0)
        finally:
            await batcher.close()

    assert run(scenario())[0][0][0] == len("still answered")


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-50", (950, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=990-5000", (990, 999)),
        ("bytes=7-7", (7, 7)),
        (" bytes = 1 - 2 ", (1, 2)),
        ("Bytes=3-4", (3, 4)),
        ("bytes=0-1, 5-6", None),  # several ranges: the whole file
        ("items=0-1", None),  # a unit this server does not know: ignored (RFC 9110, 14.2)
        ("pages=1-2", None),
        ("0-1", None),
    ],
)
def test_ranges(header: str, span: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == span


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-2", "bytes=-0", "bytes=-", "bytes=abc", "bytes=1-a"])
def test_bad_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        parse_range(header, 1000)
    assert caught.value.status_code == 416 and caught.value.headers == {"Content-Range": "bytes */1000"}
    assert "1000 bytes" in caught.value.detail


def test_log_lines_are_structured() -> None:
    record = logging.LogRecord("tvr.access", logging.INFO, __file__, 1, "GET %s %d", ("/search", 200), None)
    record.status, record.ms = 200, 1.5
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "GET /search 200" and entry["status"] == 200 and entry["level"] == "info"
    line = KeyValueFormatter().format(record)
    assert 'msg="GET /search 200"' in line and "status=200" in line and "ms=1.5" in line


def test_background_jobs_run_one_at_a_time_in_order_and_record_failures() -> None:
    from service.jobs import JobRunner, JobState

    order: list[str] = []

    def work(name: str, version: int | None, fail: bool = False):  # type: ignore[no-untyped-def]
        async def run_it() -> int | None:
            order.append(f"{name} start")
            await asyncio.sleep(0.01)
            order.append(f"{name} end")
            if fail:
                raise OSError("the disk is full")
            return version

        return run_it

    async def scenario():  # type: ignore[no-untyped-def]
        runner = JobRunner(keep=2)
        jobs = [runner.submit("a", work("a", 1)), runner.submit("b", work("b", None, fail=True))]
        jobs.append(runner.submit("c", work("c", 3)))
        assert jobs[0].state == JobState.queued
        await runner.wait_idle()
        return runner, jobs

    runner, (a, b, c) = run(scenario())
    assert order == ["a start", "a end", "b start", "b end", "c start", "c end"]
    assert (a.state, a.index_version, a.error) == (JobState.succeeded, 1, None)
    assert b.state == JobState.failed and b.error == "OSError: the disk is full" and b.finished_at is not None
    assert c.state == JobState.succeeded and c.index_version == 3
    assert runner.get(a.id) is None and runner.get(c.id) is c  # the newest finished jobs are kept
