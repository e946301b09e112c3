"""Requests batched together stay independent, over real HTTP: one query's failure, slowness or neighbours
never change another's answer."""

from __future__ import annotations

import threading

import httpx
import pytest

pytest_plugins = ["service_fixtures"]


class Guarded:
    """The real encoder, except that a text holding "boom" raises and one holding "hang" blocks until released."""

    def __init__(self, encoder) -> None:  # type: ignore[no-untyped-def]
        self.encoder, self.release = encoder, threading.Event()
        self.checkpoint_id = encoder.checkpoint_id
        self.calls: list[list[str]] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.encoder, name)

    def encode_text(self, texts: list[str]):  # type: ignore[no-untyped-def]
        self.calls.append(list(texts))
        if any("boom" in t for t in texts):
            raise ValueError("this text breaks the encoder")
        if any("hang" in t for t in texts):
            self.release.wait(30)
        return self.encoder.encode_text(texts)


def test_a_failing_query_in_a_batch_fails_alone(service_corpus, start_server) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from model import load_encoder

    guarded = Guarded(load_encoder(service_corpus.checkpoint, text_precision="float32"))
    settings = service_corpus.settings(cache_size=0, batch_wait_ms=300)  # the requests meet in one batch
    server = start_server(settings, encoder_factory=lambda _: guarded)
    texts = ["a red circle", "boom", "a blue square"]
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda q: httpx.get(f"{server.url}/search", params={"q": q}, timeout=30), texts))
    assert [a.status_code for a in answers] == [200, 500, 200]
    assert answers[0].json()["results"] and answers[2].json()["results"]
    assert sorted(texts) in [sorted(call) for call in guarded.calls]  # they were encoded together at first


def test_a_stuck_search_gets_a_503_with_its_reason_and_the_server_recovers(service_corpus, start_server) -> None:
    from model import load_encoder

    guarded = Guarded(load_encoder(service_corpus.checkpoint, text_precision="float32"))
    settings = service_corpus.settings(cache_size=0, search_timeout_s=0.5)
    server = start_server(settings, encoder_factory=lambda _: guarded)
    try:
        stuck = httpx.get(f"{server.url}/search", params={"q": "hang here"}, timeout=30)
        assert stuck.status_code == 503 and "TVR_SEARCH_TIMEOUT_S" in stuck.json()["detail"]
        assert stuck.headers["retry-after"]
        after = httpx.get(f"{server.url}/search", params={"q": "a red circle"}, timeout=30)
        assert after.status_code == 200 and after.json()["results"]  # while the stuck call still hangs
    finally:
        guarded.release.set()


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_a_query_gets_the_same_answer_whatever_it_is_batched_with(service_corpus, start_server, precision) -> None:
    settings = service_corpus.settings(cache_size=0, text_dtype=precision, batch_wait_ms=50)
    server = start_server(settings)
    query = "a small red circle quickly moves to the right"
    neighbours = ["x", "a very long query " * 20, "a green triangle moves up, then moves to the left", "dog"]
    alone = httpx.get(f"{server.url}/search", params={"q": query, "k": 10}, timeout=30).json()["results"]
    together = httpx.post(f"{server.url}/search", json={"q": [*neighbours, query], "k": 10}, timeout=30).json()
    batched = together["searches"][-1]["results"]
    assert [r["clip_id"] for r in batched] == [r["clip_id"] for r in alone]
    assert all(abs(a["score"] - b["score"]) <= 1e-5 for a, b in zip(alone, batched, strict=True))
