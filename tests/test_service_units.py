"""Plain parts of the service without a server: query batching and caching, byte ranges, log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import numpy as np
import pytest

from service.batching import QueryEncoder, cache_key
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


def test_concurrent_queries_are_encoded_together_in_bounded_batches() -> None:
    fake = SlowEncoder()

    async def scenario() -> list[np.ndarray]:
        encoder = QueryEncoder(fake, max_batch=8, wait_s=0.005, cache_size=100)
        await encoder.start()
        try:
            return await asyncio.gather(*(encoder.encode([f"query number {i}"]) for i in range(30)))
        finally:
            await encoder.close()

    results = run(scenario())
    for i, rows in enumerate(results):  # each request got its own text's embedding
        assert rows.shape == (1, 2) and rows[0, 0] == len(f"query number {i}")
    sizes = [len(b) for b in fake.batches]
    assert sum(sizes) == 30 and max(sizes) <= 8
    assert len(fake.batches) <= 5, sizes  # 30 queued at once: full batches, not 30 calls
    assert len(fake.threads) == 1  # one encoder thread: torch never runs two batches at once


def test_cache_answers_repeats_without_encoding_and_dedups_in_flight_texts() -> None:
    fake = SlowEncoder(seconds=0.01)

    async def scenario() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encoder = QueryEncoder(fake, max_batch=4, wait_s=0.0, cache_size=2)
        await encoder.start()
        try:
            first, twin = await asyncio.gather(encoder.encode(["a red circle"]), encoder.encode(["a red circle"]))
            again = await encoder.encode(["  a   red circle "])  # the same text for the tokenizer
            await encoder.encode(["b"])
            await encoder.encode(["c"])  # capacity 2: "a red circle" is evicted
            await encoder.encode(["a red circle"])
            return first, twin, again
        finally:
            await encoder.close()

    first, twin, again = run(scenario())
    assert np.array_equal(first, twin) and np.array_equal(first, again)
    encoded = [t for batch in fake.batches for t in batch]
    assert encoded.count("a red circle") == 2  # once for the twins and the repeat, once after eviction
    assert cache_key(" a\tred  circle\n") == "a red circle"


def test_a_failing_batch_fails_its_requests_only() -> None:
    fake = SlowEncoder(seconds=0.02, fail_on="boom")

    async def scenario() -> tuple[list[object], np.ndarray]:
        encoder = QueryEncoder(fake, max_batch=8, wait_s=0.01, cache_size=10)
        await encoder.start()
        try:
            outcomes = await asyncio.gather(encoder.encode(["boom"]), encoder.encode(["fine"]), return_exceptions=True)
            later = await encoder.encode(["later"])
            return outcomes, later
        finally:
            await encoder.close()

    outcomes, later = run(scenario())
    assert all(isinstance(o, ValueError) for o in outcomes)  # encoded in one batch, so both failed
    assert later[0, 0] == len("later")  # the loop goes on


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
        ("bytes=0-1, 5-6", None),
    ],
)
def test_ranges(header: str, span: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == span


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-2", "bytes=-0", "bytes=-", "bytes=abc", "items=0-1", "0-1"])
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
