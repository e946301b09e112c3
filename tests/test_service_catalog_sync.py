"""Every API replica serves what any ingester made: thumbnails from the catalog, an index it derives from
the catalog at start-up and keeps in step with it (real ingests, real servers, SQLite and PostgreSQL), at
once on start-up and reload, once the catalog settles on the periodic check (time from a fake clock)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
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
def test_two_shard_ingesters_a_ray_run_and_a_server_on_a_fourth_data_directory(
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
    more = tmp_path / "more"  # a third machine: a Ray driver (its local instance) with a data directory of its own
    write_small_corpus(more, 3, seed=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TVR_", "RAY_"))}
    env |= {"TVR_DATABASE_URL": postgres_url, "TVR_DATA_DIR": str(tmp_path / "node3"), "TVR_DEVICE": "cpu"}
    on_ray = subprocess.run(
        ["tvr", "ingest", str(more), "--ray", "--checkpoint", tiny_checkpoint],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert on_ray.returncode == 0, on_ray.stdout + on_ray.stderr
    assert "indexed 3, skipped 0 unchanged, failed 0" in on_ray.stdout
    thumbnails = catalog_thumbnails(postgres_url)
    assert len(thumbnails) == 9

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
        assert hits["total"] == 9
        videos = httpx.get(f"{url}/videos").json()["videos"]
        assert {h["video_id"] for h in hits["results"]} == {v["id"] for v in videos}  # every ingester's videos
        assert (tmp_path / "server" / "index" / "CURRENT").exists()
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    assert "index synced from the catalog" in log.read_text()


def test_an_ingest_into_the_catalog_after_start_up_is_served_once_the_catalog_is_quiet(
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


class FakeClock:
    """The periodic check's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def video_paths(corpus) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(corpus.titles)


def delete_video(settings, path: str) -> None:  # type: ignore[no-untyped-def]
    """Another machine's change to the catalog: one video and its clips gone."""
    from indexer.db import make_sessionmaker, open_catalog
    from indexer.records import delete_videos

    engine = open_catalog(settings, writer=True, auto_upgrade=False)
    try:
        delete_videos(make_sessionmaker(engine), [path])
    finally:
        engine.dispose()


def catalog_fingerprint(resources):  # type: ignore[no-untyped-def]
    from indexer.queries import indexed_clips_fingerprint

    with resources.read_session() as session:
        return indexed_clips_fingerprint(session)


def run_loaded(settings, encoder, scenario) -> None:  # type: ignore[no-untyped-def]
    """``await scenario(resources, clock)`` on a service's resources over the real catalog and index, loaded
    as at start-up, without the periodic loop: the scenario runs the checks, at the fake clock's times."""
    from service.resources import Resources

    async def main() -> None:
        clock = FakeClock()
        resources = Resources(settings, lambda _: encoder, clock=clock)
        await resources.queries.start()
        try:
            await resources.load()
            assert resources.ready, resources.stage
            await scenario(resources, clock)
        finally:
            await resources.close()

    asyncio.run(main())


async def change_then_check(resources, clock: FakeClock, now: float, path: str | None):  # type: ignore[no-untyped-def]
    """At ``now``: delete ``path``'s video from the catalog (None: no change), then one periodic check."""
    clock.now = now
    if path is not None:
        await asyncio.to_thread(delete_video, resources.settings, path)
    return await resources.follower.follow_once()


async def assert_synced_by(resources, job, served: int) -> None:  # type: ignore[no-untyped-def]
    """``job`` (a sync the check submitted) leaves a newer index holding exactly the catalog's clips."""
    assert job is not None
    await resources.jobs.wait_idle()
    assert job.state == "succeeded" and resources.index.meta.version > served
    assert resources.served_fingerprint == catalog_fingerprint(resources)
    assert resources.index.index.ntotal == catalog_fingerprint(resources)[0]
    assert resources.readiness()["index_behind_catalog_s"] is None


def test_a_catalog_that_changes_at_every_check_is_synced_once_quiet_for_one_period(
    private_corpus, tiny_encoder, caplog: pytest.LogCaptureFixture
) -> None:
    paths = video_paths(private_corpus)

    async def scenario(resources, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
        served = resources.index.meta.version
        for now in (0.0, 30.0):  # a video gone before each check: still changing
            assert await change_then_check(resources, clock, now, paths.pop()) is None
            assert resources.index.meta.version == served
        assert resources.readiness()["index_behind_catalog_s"] == 30.0  # behind since the check at 0
        job = await change_then_check(resources, clock, 60.0, None)  # unchanged since the last check
        await assert_synced_by(resources, job, served)
        assert await change_then_check(resources, clock, 90.0, None) is None  # in step: nothing to do

    with caplog.at_level(logging.DEBUG, logger="service"):
        run_loaded(private_corpus.settings(index_sync_s=0, index_sync_max_lag_s=600), tiny_encoder, scenario)
    assert "deferred, the catalog is still changing" in caplog.text
    assert "(catalog quiet); syncing" in caplog.text


def test_a_catalog_that_keeps_changing_is_synced_once_the_index_lags_the_maximum(
    private_corpus, tiny_encoder, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(resources, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
        paths, served = video_paths(private_corpus), resources.index.meta.version
        deferred = [await change_then_check(resources, clock, now, paths.pop()) for now in (0.0, 60.0)]
        assert deferred == [None, None]
        job = await change_then_check(resources, clock, 120.0, paths.pop())  # still changing, 120 s behind
        await assert_synced_by(resources, job, served)

    with caplog.at_level(logging.INFO, logger="service"):
        run_loaded(private_corpus.settings(index_sync_s=0, index_sync_max_lag_s=100), tiny_encoder, scenario)
    assert "(lagging 120 s); syncing" in caplog.text


def test_start_up_syncs_a_changed_catalog_at_once(private_corpus, tiny_encoder) -> None:
    from indexer import store

    settings = private_corpus.settings(index_sync_s=0)
    published = store.current_meta(settings.index_dir)
    assert published is not None
    delete_video(settings, video_paths(private_corpus)[0])  # before the service starts

    async def scenario(resources, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
        assert resources.index.meta.version > published.version
        assert resources.served_fingerprint == catalog_fingerprint(resources)
        assert resources.index.index.ntotal < published.vector_count

    run_loaded(settings, tiny_encoder, scenario)


def test_readyz_shows_how_long_the_index_is_behind_and_reload_syncs_at_once(
    private_corpus, start_server, tiny_encoder, api_key
) -> None:
    server = start_server(
        private_corpus.settings(api_key=api_key, index_sync_s=0), encoder_factory=lambda _: tiny_encoder
    )
    resources = server.resources
    resources.clock = clock = FakeClock()
    before = httpx.get(f"{server.url}/readyz").json()
    assert before["index_behind_catalog_s"] is None
    clock.now = 1000.0
    delete_video(resources.settings, video_paths(private_corpus)[0])
    assert resources.follower.check() is None  # the first check to see it: the catalog may still change
    clock.now = 1042.0
    assert httpx.get(f"{server.url}/readyz").json()["index_behind_catalog_s"] == 42.0
    answer = httpx.post(f"{server.url}/admin/reload", headers={"X-API-Key": api_key})
    assert answer.status_code == 200 and answer.json()["reloaded"] is True  # no settling for a reload
    after = httpx.get(f"{server.url}/readyz").json()
    assert after["index_behind_catalog_s"] is None and after["vectors"] < before["vectors"]
