"""Search by what is said, over real HTTP: SRT files beside real videos, ingested by the real pipeline into
SQLite and PostgreSQL catalogs, searched in speech, hybrid and visual modes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from indexer_fixtures import postgres_server_url, postgres_url, tiny_checkpoint, tiny_encoder  # noqa: F401 (fixtures)
from service_fixtures import ServiceCorpus, ThreadedServer, build_corpus

from service.speech import RRF_K

pytest_plugins = ["service_fixtures"]


@pytest.fixture(scope="module")
def speech_client(speech_corpus: ServiceCorpus):
    with (
        ThreadedServer(speech_corpus.settings()).start() as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        yield http


def said_where(results: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    return [(Path(hit["video"]["path"]).stem, hit["start"], hit["end"]) for hit in results]


def search(client: httpx.Client, **params: Any) -> dict[str, Any]:
    answer = client.get("/search", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_speech_mode_finds_the_clips_whose_words_match_with_snippets(speech_client) -> None:
    body = search(speech_client, q="volcano eruptions", mode="speech", k=10)
    assert body["mode"] == "speech"
    # both videos that speak of volcanoes, each at the clip holding the cue ("eruptions" stems to "erupt");
    # the cue naming both words ranks first
    assert said_where(body["results"]) == [("synth_00003", 0.0, 1.0), ("synth_00007", 2.0, 3.0)]
    first, second = body["results"]
    assert first["snippet"] == "The volcano erupted at dawn."
    assert [first["snippet"][a:b] for a, b in first["highlights"]] == ["volcano", "erupted"]
    assert [second["snippet"][a:b] for a, b in second["highlights"]] == ["Volcanoes"]
    assert all(hit["matched"] == ["speech"] for hit in body["results"])
    assert first["fused_score"] == pytest.approx(1 / (RRF_K + 1), abs=1e-6)
    assert -1.0 <= first["score"] <= 1.0  # the frames' cosine, as in every mode


def test_hybrid_is_the_default_and_fuses_the_two_rankings_as_computed_by_hand(speech_client) -> None:
    query = "a red circle moves near the harbour"
    hybrid = search(speech_client, q=query, k=100)
    assert hybrid["mode"] == "hybrid"
    visual = search(speech_client, q=query, mode="visual", k=100)["results"]
    speech = search(speech_client, q=query, mode="speech", k=100)["results"]
    assert visual and speech
    fused: dict[int, float] = {}
    for ranking in (visual, speech):
        for rank, hit in enumerate(ranking, 1):
            fused[hit["clip_id"]] = fused.get(hit["clip_id"], 0.0) + 1 / (RRF_K + rank)
    scores = {hit["clip_id"]: hit["score"] for hit in visual}
    expected = sorted(fused, key=lambda clip_id: (-fused[clip_id], -scores[clip_id], clip_id))
    assert [hit["clip_id"] for hit in hybrid["results"]] == expected
    for hit in hybrid["results"]:
        assert hit["fused_score"] == pytest.approx(fused[hit["clip_id"]], abs=1e-6)
        assert hit["score"] == pytest.approx(scores[hit["clip_id"]], abs=1e-5)
        said = hit["clip_id"] in {h["clip_id"] for h in speech}
        assert hit["matched"] == (["visual", "speech"] if said else ["visual"])
        assert (hit["snippet"] is not None) == said


def test_filters_and_paging_apply_to_speech_hits(speech_client) -> None:
    both = search(speech_client, q="harbour", mode="speech")["results"]
    assert [Path(h["video"]["path"]).stem for h in both] and len(both) == 2
    kept = search(speech_client, q="harbour", mode="speech", filter=f"video_id != {both[0]['video_id']}")
    assert [h["clip_id"] for h in kept["results"]] == [both[1]["clip_id"]] and kept["total"] == 1
    page = search(speech_client, q="harbour", mode="speech", k=1, offset=1)
    assert [h["clip_id"] for h in page["results"]] == [both[1]["clip_id"]] and page["total"] == 2
    assert page["results"][0]["rank"] == 2


def test_words_nobody_says_find_nothing_in_speech_mode(speech_client) -> None:
    body = search(speech_client, q="submarine", mode="speech")
    assert body["results"] == [] and body["total"] == 0
    assert search(speech_client, q="the of and", mode="speech")["results"] == []  # stop words only


def test_speech_needs_words(speech_client) -> None:
    clip_id = search(speech_client, q="harbour", mode="speech")["results"][0]["clip_id"]
    answer = speech_client.get("/search", params={"like": clip_id, "mode": "speech"})
    assert answer.status_code == 422 and "mode=speech" in answer.text
    assert speech_client.get("/search", params={"like": clip_id}).json()["mode"] == "visual"
    assert speech_client.get("/search", params={"q": "harbour", "mode": "loud"}).status_code == 422


def test_post_search_answers_each_query_in_its_mode(speech_client) -> None:
    answer = speech_client.post("/search", json={"q": ["volcano", "harbour"], "mode": "speech"})
    assert answer.status_code == 200, answer.text
    searches = answer.json()["searches"]
    assert [len(s["results"]) for s in searches] == [2, 2] and {s["mode"] for s in searches} == {"speech"}
    assert "olcano" in searches[0]["results"][0]["snippet"] and "harbour" in searches[1]["results"][0]["snippet"]


def test_without_subtitles_hybrid_ranks_exactly_as_visual(client) -> None:
    query = "a red circle moves to the right"
    default = client.get("/search", params={"q": query, "k": 20}).json()
    assert default["mode"] == "visual"
    hybrid = client.get("/search", params={"q": query, "k": 20, "mode": "hybrid"}).json()
    assert [(h["clip_id"], h["score"]) for h in hybrid["results"]] == [
        (h["clip_id"], h["score"]) for h in default["results"]
    ]
    assert all(h["matched"] == ["visual"] and h["snippet"] is None for h in hybrid["results"])
    assert client.get("/search", params={"q": query, "mode": "speech"}).json()["results"] == []


def test_speech_search_on_postgresql(tmp_path, postgres_url, tiny_checkpoint, tiny_encoder) -> None:  # noqa: F811
    corpus = build_corpus(tmp_path, tiny_checkpoint, tiny_encoder, speech=True, database_url=postgres_url)
    settings = corpus.settings(database_url=postgres_url)
    with ThreadedServer(settings).start() as server, httpx.Client(base_url=server.url, timeout=30) as http:
        body = search(http, q="volcano eruptions", k=10)
        assert body["mode"] == "hybrid"
        speech = search(http, q="volcano eruptions", mode="speech")["results"]
    assert said_where(speech) == [("synth_00003", 0.0, 1.0), ("synth_00007", 2.0, 3.0)]
    assert [speech[0]["snippet"][a:b] for a, b in speech[0]["highlights"]] == ["volcano", "erupted"]
    assert [speech[1]["snippet"][a:b] for a, b in speech[1]["highlights"]] == ["Volcanoes"]
    said = {h["clip_id"] for h in speech}
    assert said <= {h["clip_id"] for h in body["results"] if "speech" in h["matched"]}


def test_a_video_lists_its_subtitle_tracks_and_a_broken_one_says_why(speech_client) -> None:
    videos = {Path(v["path"]).stem: v for v in speech_client.get("/videos", params={"limit": 50}).json()["videos"]}
    assert len(videos) == 12  # the video with the broken file is indexed all the same
    tracks = speech_client.get(f"/videos/{videos['synth_00007']['id']}").json()["subtitles"]
    assert [(t["source"], t["status"], t["segments"], t["error"]) for t in tracks] == [
        ("videos/synth_00007.srt", "ok", 2, None)
    ]
    (broken,) = speech_client.get(f"/videos/{videos['synth_00005']['id']}").json()["subtitles"]
    assert broken["source"] == "videos/synth_00005.en.srt" and broken["language"] == "en"
    assert broken["status"] == "failed" and broken["segments"] == 0
    assert "videos/synth_00005.en.srt" in broken["error"] and str(Path("/")) + "tmp" not in broken["error"]
    assert speech_client.get(f"/videos/{videos['synth_00001']['id']}").json()["subtitles"] == []


def test_only_collections_whose_videos_have_text_default_to_hybrid(speech_corpus: ServiceCorpus) -> None:
    from sqlalchemy import text

    from indexer.db import make_engine, make_sessionmaker
    from indexer.text_queries import has_text

    engine = make_engine(speech_corpus.settings().catalog_url)
    with make_sessionmaker(engine)() as session:
        assert has_text(session) and has_text(session, ["default"]) and not has_text(session, ["sport"])
        # a collection holding only the video whose subtitle file is broken has no text
        session.execute(text("UPDATE videos SET collection = 'sport' WHERE path LIKE '%synth_00005.mp4'"))
        assert not has_text(session, ["sport"]) and has_text(session, ["default", "sport"])
        session.rollback()
    engine.dispose()
