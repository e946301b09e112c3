"""``GET /videos/{id}/moments`` over real HTTP: the curve of a video's clips and its best moments."""

from __future__ import annotations

import sqlite3

import httpx
import numpy as np
import pytest

from service.moments import find_moments, moment_of_clip

pytest_plugins = ["service_fixtures"]


def test_the_curve_scores_every_clip_of_the_video_in_time_order(client, exact, service_corpus) -> None:
    video_id = exact.video_of(int(exact.clip_ids[5]))
    detail = client.get(f"/videos/{video_id}").json()
    query = detail["title"]
    body = client.get(f"/videos/{video_id}/moments", params={"q": query}).json()
    scores = exact.scores(query)
    assert body["video_id"] == video_id and body["query"] == query and len(detail["clips"]) > 1
    assert [(p["start"], p["end"]) for p in body["curve"]] == [(c["start"], c["end"]) for c in detail["clips"]]
    for point, clip in zip(body["curve"], detail["clips"], strict=True):
        assert point["score"] == pytest.approx(scores[clip["id"]], abs=1e-5)
    windows = [(c["start"], c["end"]) for c in detail["clips"]]
    expected = find_moments(windows, np.array([p["score"] for p in body["curve"]]))
    assert [(m["start"], m["end"]) for m in body["moments"]] == [(m.start, m.end) for m in expected]
    assert body["moments"] and all(m["confidence"] is None for m in body["moments"])  # uncalibrated checkpoint
    assert [m["score"] for m in body["moments"]] == sorted((m["score"] for m in body["moments"]), reverse=True)
    assert all(m["score"] >= body["threshold"] for m in body["moments"])


def test_moments_of_a_missing_video_or_without_words_are_refused(client) -> None:
    assert client.get("/videos/999999/moments", params={"q": "a dog"}).status_code == 404
    assert client.get("/videos/1/moments").status_code == 422
    assert client.get("/videos/1/moments", params={"q": "   "}).status_code == 422


def test_a_video_indexed_with_another_checkpoint_says_to_reingest(private_corpus, start_server) -> None:
    with sqlite3.connect(private_corpus.data_dir / "catalog.sqlite3") as catalog:
        catalog.execute("UPDATE videos SET checkpoint_id = 'an-older-one' WHERE id = 1")
    server = start_server(private_corpus.settings())
    answer = httpx.get(f"{server.url}/videos/1/moments", params={"q": "a red circle"}, timeout=30)
    assert answer.status_code == 409 and "an-older-one" in answer.json()["detail"]
    assert "tvr ingest" in answer.json()["detail"]


def test_search_with_moments_gives_each_result_the_span_around_its_clip(client, exact) -> None:
    query = "a red circle moves to the right"
    plain = client.get("/search", params={"q": query, "k": 5}).json()["results"]
    assert all(hit["moment"] is None for hit in plain)
    hits = client.get("/search", params={"q": query, "k": 5, "moments": True}).json()["results"]
    assert [h["clip_id"] for h in hits] == [h["clip_id"] for h in plain]
    scores = exact.scores(query)
    for hit in hits:
        clips = client.get(f"/videos/{hit['video_id']}").json()["clips"]
        near = [c for c in clips if c["end"] > hit["start"] - 60 and c["start"] < hit["end"] + 60]
        windows, near_scores = [(c["start"], c["end"]) for c in near], np.array([scores[c["id"]] for c in near])
        expected = moment_of_clip(windows, near_scores, (hit["start"], hit["end"]))
        moment = hit["moment"]
        assert (moment["start"], moment["end"]) == (expected.start, expected.end)
        assert moment["score"] == pytest.approx(expected.score, abs=1e-4) and moment["confidence"] is None
        assert moment["start"] < hit["end"] and moment["end"] > hit["start"]  # it holds the hit's clip
    liked = client.get("/search", params={"like": hits[0]["clip_id"], "k": 3, "moments": True}).json()["results"]
    assert liked and all(h["moment"] is not None for h in liked)
    posted = client.post("/search", json={"q": [query, "a blue square"], "k": 2, "moments": True}).json()
    assert all(h["moment"] is not None for search in posted["searches"] for h in search["results"])
