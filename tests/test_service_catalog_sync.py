"""Every API replica serves what any ingester made: thumbnails from the catalog, an index it derives from
the catalog at start-up and keeps in step with it (real ingests, real servers, SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from indexer_fixtures import postgres_server_url, postgres_url, run_ingest, write_small_corpus  # noqa: F401 (fixtures)
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

pytest_plugins = ["service_fixtures"]


def catalog_thumbnails(url: str) -> dict[int, bytes]:
    from indexer.catalog import ClipThumbnail
    from indexer.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(ClipThumbnail.clip_id, ClipThumbnail.jpeg)).all()
    finally:
        engine.dispose()
    return {int(clip_id): jpeg for clip_id, jpeg in rows}


def wait_for(condition, timeout: float = 60, every: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll ``condition()`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(every)
    return value


@pytest.mark.slow
def test_two_shard_ingesters_and_a_server_on_a_third_data_directory(
    tmp_path: Path,
    postgres_url: str,  # noqa: F811
    tiny_checkpoint: str,
) -> None:
    from service_fixtures import cli_env, free_port, start_cli_server, wait_ready

    from tvr_cli import app

    folder = tmp_path / "videos"
    write_small_corpus(folder, 6)
    runner = CliRunner()
    upgraded = runner.invoke(app, ["db", "upgrade", "--database-url", postgres_url])
    assert upgraded.exit_code == 0, upgraded.output
    indexed = []
    for i in (1, 2):  # two machines: a data directory each, one catalog
        env = {"TVR_DATABASE_URL": postgres_url, "TVR_DATA_DIR": str(tmp_path / f"node{i}"), "TVR_DEVICE": "cpu"}
        result = runner.invoke(
            app,
            ["ingest", str(folder), "--shard", f"{i}/2", "--workers", "0", "--checkpoint", tiny_checkpoint],
            env=env,
        )
        assert result.exit_code == 0, result.output
        indexed.append(int(result.output.split("indexed ")[1].split(",")[0]))
        assert not (tmp_path / f"node{i}" / "thumbnails").exists()
    assert sum(indexed) == 6 and min(indexed) > 0
    thumbnails = catalog_thumbnails(postgres_url)
    assert len(thumbnails) == 6

    url = f"http://127.0.0.1:{free_port()}"
    env = cli_env(tmp_path / "server", tiny_checkpoint, TVR_DATABASE_URL=postgres_url)
    log = tmp_path / "serve.log"
    process = start_cli_server(["serve", "--port", url.rsplit(":", 1)[1]], env, log)
    try:
        wait_ready(url, 120)  # no `tvr index rebuild`: the server built its index from the catalog
        for clip_id, jpeg in thumbnails.items():
            response = httpx.get(f"{url}/clips/{clip_id}/thumbnail")
            assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
            assert response.content == jpeg
            assert Image.open(io.BytesIO(response.content)).format == "JPEG"
        hits = httpx.get(f"{url}/search", params={"q": "a coloured square", "k": 100}).json()
        assert hits["total"] == 6
        videos = httpx.get(f"{url}/videos").json()["videos"]
        assert {h["video_id"] for h in hits["results"]} == {v["id"] for v in videos}  # both shards' videos
        assert (tmp_path / "server" / "index" / "CURRENT").exists()
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    assert "index synced from the catalog" in log.read_text()


def test_an_ingest_into_the_catalog_after_start_up_is_served_by_the_next_check(
    private_corpus,
    start_server,
    tmp_path: Path,
    tiny_encoder,
) -> None:
    from indexer.settings import Settings

    folder = tmp_path / "later"
    folder.mkdir()
    settings = private_corpus.settings(index_sync_s=0.2, media_roots=[private_corpus.media_root, folder])
    server = start_server(settings)
    before = httpx.get(f"{server.url}/readyz").json()
    # another machine ingests into the same catalog, publishing nothing where this server looks
    other = Settings(data_dir=tmp_path / "other", database_url=settings.catalog_url, checkpoint=settings.checkpoint)
    write_small_corpus(folder, 3, seed=7)
    summary = run_ingest(other, [folder], tiny_encoder, publish=False)
    assert summary.indexed == 3
    ready = wait_for(lambda: (r := httpx.get(f"{server.url}/readyz").json())["vectors"] == before["vectors"] + 3 and r)
    assert ready["index_version"] > before["index_version"]
    thumbnails = catalog_thumbnails(settings.catalog_url)
    results, total = [], None
    while total is None or len(results) < total:  # every page of the ranking
        page = httpx.get(f"{server.url}/search", params={"q": "a square", "k": 100, "offset": len(results)}).json()
        results, total = results + page["results"], page["total"]
    assert total == before["vectors"] + 3
    new = [h for h in results if h["video"]["path"].startswith("v7_")]
    assert len(new) == 3
    for hit in new:
        response = httpx.get(f"{server.url}{hit['thumbnail_url']}")
        assert response.status_code == 200 and response.content == thumbnails[hit["clip_id"]]
