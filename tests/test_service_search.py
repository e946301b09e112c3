"""Searching over real HTTP: shape, order (against exhaustive search), pages, grouping, filters, batches."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest_plugins = ["service_fixtures"]  # its session fixtures are shared by every service test module

QUERY = "a red circle moves to the right"
HIT_KEYS = {"rank", "score", "confidence", "clip_id", "video_id", "video", "start", "end", "thumbnail_url", "media_url"}
HIT_KEYS |= {"moment", "matched", "fused_score", "snippet", "highlights"}


def search(client: httpx.Client, **params: object) -> dict:
    response = client.get("/search", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_default_query_precision_is_int8_on_the_cpu_and_close_to_exact(service_corpus, exact, start_server) -> None:
    settings = service_corpus.settings(text_dtype="auto")
    assert settings.query_precision == "int8"
    assert service_corpus.settings(text_dtype="auto", device="cuda").query_precision == "float32"
    server = start_server(settings)
    assert server.resources.encoder.text_precision == "int8"
    with httpx.Client(base_url=server.url, timeout=30) as http:
        body = search(http, q=QUERY, k=10)
    scores = exact.scores(QUERY)
    assert len(body["results"]) == 10
    for hit in body["results"]:  # int8 queries: scores near the exact ones, whatever the order of near-ties
        assert hit["score"] == pytest.approx(scores[hit["clip_id"]], abs=0.02)
    best = max(scores.values())
    assert body["results"][0]["score"] == pytest.approx(best, abs=0.02)


def test_result_shape_and_order_match_exhaustive_search(client, exact, service_corpus) -> None:
    body = search(client, q=QUERY, k=10)
    assert set(body) == {"query", "like", "example", "mode", "took_ms", "total", "results"}
    assert body["query"] == QUERY and body["took_ms"] > 0 and body["mode"] == "visual"  # no subtitles here
    assert body["total"] == len(exact.clip_ids)  # every clip is within the result window
    expected = exact.ranking(QUERY)[:10]
    assert [h["clip_id"] for h in body["results"]] == [c for c, _ in expected]
    for rank, (hit, (_, score)) in enumerate(zip(body["results"], expected, strict=True), 1):
        assert set(hit) == HIT_KEYS and set(hit["video"]) == {"id", "title", "path", "duration"}
        assert hit["rank"] == rank and hit["score"] == pytest.approx(score, abs=1e-4)
        assert hit["video_id"] == hit["video"]["id"] == exact.video_of(hit["clip_id"])
        caption = service_corpus.titles[str(service_corpus.file(hit["video"]["path"]))]
        assert hit["video"]["title"] == caption  # the manifest's caption
        assert 0 <= hit["start"] < hit["end"] <= hit["video"]["duration"] + 1e-6
        assert hit["end"] - hit["start"] == pytest.approx(1.0)
        assert hit["thumbnail_url"] == f"/clips/{hit['clip_id']}/thumbnail"
        assert hit["media_url"] == f"/videos/{hit['video_id']}/media#t={hit['start']:.3f},{hit['end']:.3f}"
        assert re.fullmatch(r"/videos/\d+/media#t=\d+\.\d{3},\d+\.\d{3}", hit["media_url"])
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)


def test_pages_concatenate_to_the_full_ranking(client, exact) -> None:
    whole = search(client, q=QUERY, k=100)["results"]
    assert [h["clip_id"] for h in whole] == [c for c, _ in exact.ranking(QUERY)]
    pages, offset = [], 0
    while True:
        body = search(client, q=QUERY, k=7, offset=offset)
        assert body["total"] == len(whole)
        if not body["results"]:
            break
        assert len(body["results"]) == min(7, len(whole) - offset)
        pages += body["results"]
        offset += 7
    assert [(h["rank"], h["clip_id"]) for h in pages] == [(h["rank"], h["clip_id"]) for h in whole]
    assert [h["rank"] for h in pages] == list(range(1, len(whole) + 1))
    assert search(client, q=QUERY, k=5, offset=900)["results"] == []  # past the end: an empty page


def test_group_by_video_keeps_the_best_clip_of_each_video(client, exact, service_corpus) -> None:
    body = search(client, q=QUERY, k=100, group_by="video")
    best: dict[int, tuple[int, float]] = {}
    for clip_id, score in exact.ranking(QUERY):
        best.setdefault(exact.video_of(clip_id), (clip_id, score))
    assert body["total"] == service_corpus.videos == len(best)
    videos = [h["video_id"] for h in body["results"]]
    assert len(set(videos)) == len(videos) == service_corpus.videos
    for hit in body["results"]:
        assert hit["clip_id"] == best[hit["video_id"]][0]
    expected_order = sorted(best, key=lambda v: -best[v][1])
    assert videos == expected_order
    second_page = search(client, q=QUERY, k=5, offset=5, group_by="video")["results"]
    assert [h["video_id"] for h in second_page] == expected_order[5:10]
    assert [h["rank"] for h in second_page] == [6, 7, 8, 9, 10]


def test_min_score_drops_weaker_results(client, exact) -> None:
    ranking = exact.ranking(QUERY)
    threshold = round((ranking[4][1] + ranking[5][1]) / 2, 6)  # between the 5th and 6th clip
    body = search(client, q=QUERY, k=50, min_score=threshold)
    assert body["total"] == 5 and [h["clip_id"] for h in body["results"]] == [c for c, _ in ranking[:5]]
    assert all(h["score"] >= threshold for h in body["results"])
    assert search(client, q=QUERY, min_score=1.0)["results"] == []


def test_post_answers_one_query_like_get_and_several_together(client) -> None:
    other = "a large blue square moves down"
    single = client.post("/search", json={"q": QUERY, "k": 6, "offset": 2})
    assert single.status_code == 200, single.text
    get = search(client, q=QUERY, k=6, offset=2)
    assert set(single.json()) == set(get)
    assert [(h["clip_id"], h["rank"]) for h in single.json()["results"]] == [
        (h["clip_id"], h["rank"]) for h in get["results"]
    ]

    many = client.post("/search", json={"q": [QUERY, other], "k": 4, "group_by": "video"})
    assert many.status_code == 200, many.text
    body = many.json()
    assert set(body) == {"took_ms", "searches"} and [s["query"] for s in body["searches"]] == [QUERY, other]
    for answer in body["searches"]:
        alone = search(client, q=answer["query"], k=4, group_by="video")
        assert [h["clip_id"] for h in answer["results"]] == [h["clip_id"] for h in alone["results"]]
        assert answer["total"] == alone["total"]


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    text = client.get("/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    assert wanted is not None
    return total


def test_concurrent_queries_share_encoder_batches_and_repeats_hit_the_cache(client, live_server) -> None:
    batches_before = metric(client, "tvr_encode_batch_size_count")
    queries = [f"a small green triangle number {i} moves up" for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda q: client.get("/search", params={"q": q, "k": 3}), queries))
    assert all(a.status_code == 200 for a in answers)
    batches = metric(client, "tvr_encode_batch_size_count") - batches_before
    assert 1 <= batches < len(queries)  # 24 distinct queries, fewer encoder calls

    hits_before = metric(client, "tvr_query_cache_total", result="hit")
    batches_before = metric(client, "tvr_encode_batch_size_count")
    assert client.get("/search", params={"q": queries[0], "k": 3}).status_code == 200
    assert metric(client, "tvr_query_cache_total", result="hit") == hits_before + 1
    assert metric(client, "tvr_encode_batch_size_count") == batches_before  # no encoding for a repeat


def test_metrics_report_stages_latency_and_index_size(client, exact) -> None:
    search(client, q="a white circle", k=3)
    assert metric(client, "tvr_index_vectors") == len(exact.clip_ids)
    assert metric(client, "tvr_index_size_bytes") > 0 and metric(client, "tvr_ready") == 1
    for stage in ("tvr_encode_seconds_count", "tvr_search_seconds_count", "tvr_catalog_seconds_count"):
        assert metric(client, stage) >= 1, stage
    assert metric(client, "tvr_http_request_duration_seconds_count", route="/search", status="200") >= 1
    assert metric(client, "tvr_http_request_duration_seconds_count", route="unmatched") >= 0


def test_every_request_is_logged_as_a_structured_line(client, caplog) -> None:
    import json

    from service.logs import JsonFormatter

    with caplog.at_level("INFO", logger="tvr.access"):
        search(client, q="a yellow square", k=2)
        deadline = time.monotonic() + 5
        while True:  # the line is written once the answer has gone out, on the server's thread
            records = [r for r in caplog.records if r.name == "tvr.access" and getattr(r, "route", None) == "/search"]
            if records or time.monotonic() > deadline:
                break
            time.sleep(0.01)
    assert records, [r.getMessage() for r in caplog.records]
    entry = json.loads(JsonFormatter().format(records[-1]))
    assert entry["status"] == 200 and entry["method"] == "GET" and entry["ms"] > 0 and entry["path"] == "/search"


def test_catalog_routes_page_through_videos(client, service_corpus) -> None:
    whole = client.get("/videos", params={"limit": 200}).json()
    assert whole["total"] == service_corpus.videos == len(whole["videos"])
    ids = [v["id"] for v in whole["videos"]]
    assert ids == sorted(ids)
    pages = [client.get("/videos", params={"limit": 5, "offset": o}).json() for o in (0, 5, 10, 15)]
    assert [v["id"] for p in pages for v in p["videos"]] == ids and pages[-1]["videos"] == []
    paths = {v["path"] for v in whole["videos"]}  # relative to their media root
    assert "videos/synth_00000.mp4" in paths and all(path.startswith("videos/synth_") for path in paths)
    video = next(v for v in whole["videos"] if v["path"] == "videos/synth_00000.mp4")
    assert video["title"] == service_corpus.titles[str(service_corpus.file(video["path"]))]
    assert video["status"] == "indexed"
    detail = client.get(f"/videos/{video['id']}").json()
    assert detail["clip_count"] == len(detail["clips"]) == video["clip_count"] == round(video["duration"])
    starts = [c["start"] for c in detail["clips"]]
    assert starts == sorted(starts) and starts[0] == 0
    assert all(c["media_url"].startswith(f"/videos/{video['id']}/media#t=") for c in detail["clips"])
