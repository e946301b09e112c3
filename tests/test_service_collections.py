"""``GET /collections`` over real HTTP on the real ingested corpus: videos, clips and hours per collection of
what a client may see (indexed videos inside the media roots; the admin key sees every indexed video), behind
the read key, and a rename seen at the next request."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import httpx
import pytest

pytest_plugins = ["service_fixtures"]  # its session fixtures are shared by every service test module

READ_KEY = "collections-read-key-0123456789"


def expected_counts(data_dir: Path) -> list[dict]:
    """What the catalog holds per collection: indexed videos, their clips and hours, by name."""
    with closing(sqlite3.connect(data_dir / "catalog.sqlite3")) as db:
        videos = db.execute(
            "SELECT collection, COUNT(*), SUM(duration) FROM videos WHERE status = 'indexed' GROUP BY 1 ORDER BY 1"
        ).fetchall()
        clips = dict(
            db.execute(
                "SELECT v.collection, COUNT(*) FROM clips c JOIN videos v ON v.id = c.video_id"
                " WHERE v.status = 'indexed' GROUP BY 1"
            ).fetchall()
        )
    return [
        {"name": name, "videos": count, "clips": clips[name], "hours": pytest.approx(seconds / 3600)}
        for name, count, seconds in videos
    ]


def get(server_url: str, key: str | None = None) -> httpx.Response:
    return httpx.get(f"{server_url}/collections", headers={"X-API-Key": key} if key else {}, timeout=30)


@pytest.fixture
def two_collections(private_corpus, tiny_encoder, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The corpus with 5 of its 12 videos moved to ``news`` by ingesting them again (no re-encoding), and a
    failed entry in a collection of its own, ``broken``."""
    from indexer.db import make_sessionmaker, open_catalog
    from indexer.pipeline import IngestOptions, ingest
    from indexer.records import record_failed
    from indexer.sources import discover

    settings = private_corpus.settings()
    summary = ingest(
        settings,
        discover(sorted(private_corpus.titles)[:5], collection="news"),
        IngestOptions(workers=0, progress=False),
        encoder=tiny_encoder,
    )
    assert (summary.indexed, summary.skipped, summary.moved) == (0, 5, 5)
    writer = open_catalog(settings, writer=True)
    broken = str(private_corpus.media_root / "broken.mp4")
    record_failed(make_sessionmaker(writer), broken, "not a video", collection="broken")
    writer.dispose()
    return private_corpus


def test_counts_per_collection_of_indexed_videos(two_collections, start_server, tiny_encoder) -> None:
    server = start_server(two_collections.settings(), encoder_factory=lambda _: tiny_encoder)
    expected = expected_counts(two_collections.data_dir)
    assert [(row["name"], row["videos"]) for row in expected] == [("default", 7), ("news", 5)]

    response = get(server.url)

    assert response.status_code == 200, response.text
    assert response.json() == {"collections": expected}  # by name; "broken" holds no indexed video

    from indexer.collections import rename_collection
    from indexer.db import make_sessionmaker, open_catalog

    writer = open_catalog(two_collections.settings(), writer=True)
    assert rename_collection(make_sessionmaker(writer), "news", "sport") == 5
    writer.dispose()
    renamed = get(server.url).json()["collections"]
    assert [(row["name"], row["videos"]) for row in renamed] == [("default", 7), ("sport", 5)]


def test_the_read_key_and_the_media_roots_are_respected(
    two_collections, start_server, tiny_encoder, api_key: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings = two_collections.settings(api_key=api_key, read_api_key=READ_KEY, media_roots=[elsewhere])
    server = start_server(settings, encoder_factory=lambda _: tiny_encoder)

    anonymous = get(server.url)
    assert anonymous.status_code == 401 and "read key" in anonymous.json()["detail"]
    assert get(server.url, "wrong").status_code == 401
    reader = get(server.url, READ_KEY)
    assert reader.status_code == 200 and reader.json() == {"collections": []}  # no video lies inside the roots
    admin = get(server.url, api_key)  # the admin key sees every indexed video, wherever it lies
    assert admin.status_code == 200 and admin.json() == {"collections": expected_counts(two_collections.data_dir)}


def test_search_keeps_to_the_collections_asked_for_and_follows_a_rename(
    two_collections, start_server, tiny_encoder, api_key
) -> None:
    news_paths = {str(Path(p).resolve()) for p in sorted(two_collections.titles)[:5]}
    server = start_server(two_collections.settings(api_key=api_key), encoder_factory=lambda _: tiny_encoder)

    def shown_files(**params: object) -> set[str]:
        response = httpx.get(f"{server.url}/search", params={"q": "a blue square", "k": 100, **params}, timeout=30)
        assert response.status_code == 200, response.text
        return {str(two_collections.file(hit["video"]["path"]).resolve()) for hit in response.json()["results"]}

    assert shown_files(collection="news") == news_paths
    assert shown_files(collection="default") == set(two_collections.titles) - news_paths
    assert shown_files(collection="news,default") == shown_files() == set(two_collections.titles)

    from indexer.collections import rename_collection
    from indexer.db import make_sessionmaker, open_catalog

    writer = open_catalog(two_collections.settings(), writer=True)
    rename_collection(make_sessionmaker(writer), "news", "sport")
    writer.dispose()
    reloaded = httpx.post(f"{server.url}/admin/reload", headers={"X-API-Key": api_key}, timeout=60)
    assert reloaded.status_code == 200, reloaded.text
    assert shown_files(collection="sport") == news_paths
    gone = httpx.get(f"{server.url}/search", params={"q": "a blue square", "collection": "news"}, timeout=30)
    assert gone.status_code == 422 and "no collection named news" in gone.json()["message"]
