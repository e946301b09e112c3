"""Admin routes, readiness and index swaps, each on a server of its own over a private copy of the corpus."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter

import httpx

pytest_plugins = ["service_fixtures"]


def sessions_of(corpus):  # type: ignore[no-untyped-def]
    from indexer.db import make_sessionmaker, open_catalog

    return make_sessionmaker(open_catalog(corpus.settings()))


def test_admin_routes_need_the_key(client, api_key) -> None:
    for headers in ({}, {"X-API-Key": "wrong-key-0123456789"}, {"X-API-Key": ""}):
        reload = client.post("/admin/reload", headers=headers)
        assert reload.status_code == 401 and "X-API-Key" in reload.json()["detail"]
        delete = client.delete("/videos/1", headers=headers)
        assert delete.status_code == 401
    assert client.get("/videos/1").status_code == 200  # nothing was deleted
    answer = client.post("/admin/reload", headers={"X-API-Key": api_key})
    assert answer.status_code == 200 and answer.json()["reloaded"] is False  # nothing newer was published


def test_admin_routes_are_disabled_without_a_key(private_corpus, start_server, api_key) -> None:
    server = start_server(private_corpus.settings(api_key=None))
    for headers in ({}, {"X-API-Key": api_key}):
        response = httpx.post(f"{server.url}/admin/reload", headers=headers)
        assert response.status_code == 403 and "TVR_API_KEY" in response.json()["detail"]
        assert httpx.delete(f"{server.url}/videos/1", headers=headers).status_code == 403
    assert httpx.get(f"{server.url}/videos/1").status_code == 200


def test_reload_under_a_stream_of_searches_fails_no_request(private_corpus, start_server, api_key) -> None:
    from indexer.sync import sync_index

    server = start_server(private_corpus.settings(api_key=api_key))
    first = httpx.get(f"{server.url}/readyz").json()["index_version"]
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    versions_seen: set[int] = set()
    queries = ["a red circle", "a green square moves up", "a white triangle on a purple background", "blue"]

    def stream(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            i = 0
            while not stop.is_set():
                params = {"q": f"{queries[i % len(queries)]} {worker}-{i % 7}", "k": 5 + i % 20}
                if i % 3 == 0:
                    params["group_by"] = "video"
                try:
                    response = http.get("/search", params=params)
                    ok = response.status_code == 200 and len(response.json()["results"]) > 0
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                outcomes["ok" if ok else "failed"] += 1
                if not ok:
                    failures.append(f"{response.status_code}: {response.text[:200]}")
                i += 1

    threads = [threading.Thread(target=stream, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        for step in range(3):
            meta = sync_index(sessions_of(private_corpus), private_corpus.settings().index_dir, rebuild=True)
            before = sum(outcomes.values())
            answer = httpx.post(f"{server.url}/admin/reload", headers={"X-API-Key": api_key}, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {
                "reloaded": True,
                "version": meta.version,
                "previous": first + step,
                "vectors": meta.vector_count,
            }
            versions_seen.add(httpx.get(f"{server.url}/readyz").json()["index_version"])
            deadline = time.monotonic() + 10
            while sum(outcomes.values()) < before + 8 and time.monotonic() < deadline:
                time.sleep(0.05)  # searches keep flowing across every swap
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not failures, failures[:5]
    assert outcomes["ok"] >= 30, outcomes
    assert versions_seen == {first + 1, first + 2, first + 3}


def test_reload_keeps_serving_when_the_catalog_moved_to_another_checkpoint(
    private_corpus, start_server, api_key
) -> None:
    from sqlalchemy import update

    from indexer import store
    from indexer.catalog import Video

    server = start_server(private_corpus.settings(api_key=api_key, index_sync_s=0))
    served = store.current_meta(private_corpus.settings().index_dir)
    with sessions_of(private_corpus).begin() as session:  # as if re-encoded by another model
        session.execute(update(Video).values(checkpoint_id="another-model"))
    answer = httpx.post(f"{server.url}/admin/reload", headers={"X-API-Key": api_key})
    assert answer.status_code == 409
    assert "another-model" in answer.json()["detail"] and served.checkpoint_id in answer.json()["detail"]
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["index_version"] == served.version
    assert httpx.get(f"{server.url}/search", params={"q": "a red circle"}).status_code == 200


def wait_for_job(http: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (job := http.get(f"/admin/jobs/{job_id}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def test_delete_answers_once_the_catalog_changed_and_republishes_in_the_background(
    private_corpus, start_server, api_key, monkeypatch
) -> None:
    import service.resources

    republishing, finish = threading.Event(), threading.Event()
    real_sync = service.resources.sync_index

    def held_sync(*args, **kwargs):  # type: ignore[no-untyped-def]
        republishing.set()
        assert finish.wait(30), "the test never released the index job"
        return real_sync(*args, **kwargs)

    server = start_server(private_corpus.settings(api_key=api_key, index_sync_s=0))
    monkeypatch.setattr(service.resources, "sync_index", held_sync)  # once the server synced at start-up
    http = httpx.Client(base_url=server.url, headers={"X-API-Key": api_key}, timeout=30)
    video = http.get("/videos/2").json()
    ready = http.get("/readyz").json()
    answer = http.delete("/videos/2")
    assert answer.status_code == 202, answer.text
    assert answer.json()["deleted"] == 2 and answer.json()["path"] == video["path"]
    job_id = answer.json()["job_id"]
    # the answer came while the index job is still held: the request did not wait for the index change
    assert republishing.wait(30) and http.get(f"/admin/jobs/{job_id}").json()["state"] == "running"
    assert http.get("/videos/2").status_code == 404
    for clip in video["clips"]:
        assert http.get(clip["thumbnail_url"]).status_code == 404
    hits = http.get("/search", params={"q": video["title"], "k": 100}).json()  # searches go on meanwhile
    assert 2 not in {h["video_id"] for h in hits["results"]} and len(hits["results"]) > 0
    assert http.get("/readyz").json()["index_version"] == ready["index_version"]
    finish.set()
    job = wait_for_job(http, job_id)
    assert job["state"] == "succeeded" and job["error"] is None and job["index_version"] == ready["index_version"] + 1
    after = http.get("/readyz").json()
    assert after["index_version"] == job["index_version"] and after["vectors"] == ready["vectors"] - video["clip_count"]
    hits = http.get("/search", params={"q": video["title"], "k": 100}).json()
    assert hits["total"] == ready["vectors"] - video["clip_count"]
    again = http.delete("/videos/2")
    assert again.status_code == 404 and "no video with id 2" in again.json()["detail"]


def test_jobs_need_the_admin_key_and_unknown_ones_are_404(live_server, api_key) -> None:
    assert httpx.get(f"{live_server.url}/admin/jobs/abc").status_code == 401
    unknown = httpx.get(f"{live_server.url}/admin/jobs/abc", headers={"X-API-Key": api_key})
    assert unknown.status_code == 404 and "no job with id abc" in unknown.json()["detail"]


def test_not_ready_until_loaded(private_corpus, start_server) -> None:
    from model import load_encoder

    release = threading.Event()

    def slow_encoder(settings):  # type: ignore[no-untyped-def]
        release.wait(30)
        return load_encoder(settings.checkpoint)

    server = start_server(private_corpus.settings(), encoder_factory=slow_encoder, ready=False)
    try:
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "loading the encoder" in ready.json()["stage"]
        search = httpx.get(f"{server.url}/search", params={"q": "a red circle"})
        assert search.status_code == 503 and "not ready: loading the encoder" in search.json()["detail"]
        assert httpx.get(f"{server.url}/videos").status_code == 503
    finally:
        release.set()
    deadline = time.monotonic() + 30
    while httpx.get(f"{server.url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "never became ready"
        time.sleep(0.05)
    assert httpx.get(f"{server.url}/search", params={"q": "a red circle"}).status_code == 200


def test_a_data_directory_without_an_index_gets_one_from_the_catalog(private_corpus, start_server) -> None:
    from indexer import store
    from indexer.sync import verify_index

    settings = private_corpus.settings()
    expected = store.current_meta(settings.index_dir).vector_count
    shutil.rmtree(settings.index_dir)
    server = start_server(settings)
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["vectors"] == expected and ready["index_version"] == 1
    assert verify_index(sessions_of(private_corpus), settings.index_dir).ok
    assert httpx.get(f"{server.url}/search", params={"q": "cat"}).json()["total"] == expected


def test_not_ready_while_the_catalog_is_empty_until_a_reload_finds_videos(
    tmp_path, service_corpus, start_server, api_key
) -> None:
    from indexer.catalog import Base
    from indexer.db import make_engine, make_sessionmaker, upgrade

    empty = service_corpus.settings(data_dir=tmp_path / "empty", api_key=api_key, index_sync_s=0)
    upgrade(make_engine(empty.catalog_url))
    server = start_server(empty, ready=False)
    deadline = time.monotonic() + 30
    while "loading" in (stage := httpx.get(f"{server.url}/readyz").json()["stage"]) or stage in (
        "starting",
        "bringing the index in line with the catalog",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 503 and "no published index" in ready.json()["stage"]
    assert httpx.get(f"{server.url}/search", params={"q": "cat"}).status_code == 503
    source = make_engine(service_corpus.settings().catalog_url)  # the corpus's rows, copied into the empty catalog
    target = make_sessionmaker(make_engine(empty.catalog_url, writer=True))
    with source.connect() as rows, target.begin() as session:
        for table in Base.metadata.sorted_tables:
            copied = [dict(r._mapping) for r in rows.execute(table.select())]
            if table.name != "index_versions" and copied:  # no rows: no insert (it would add one of defaults)
                session.execute(table.insert(), copied)
    answer = httpx.post(f"{server.url}/admin/reload", headers={"X-API-Key": api_key})
    assert answer.status_code == 200, answer.text
    # synced and swapped in by this call, or a moment earlier by the server's own look for an index
    assert answer.json()["version"] == 1 and answer.json()["vectors"] > 0
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert httpx.get(f"{server.url}/search", params={"q": "cat"}).status_code == 200


def test_legacy_thumbnail_files_are_served_and_never_from_outside_their_folder(private_corpus, start_server) -> None:
    from sqlalchemy import delete, select, update

    from indexer.catalog import Clip, ClipThumbnail

    # a catalog from before revision 0004: clips name JPEG files under TVR_DATA_DIR/thumbnails
    legacy = private_corpus.data_dir / "thumbnails" / "1" / "legacy-00000.jpg"
    legacy.parent.mkdir(parents=True)
    with sessions_of(private_corpus).begin() as session:
        jpeg = session.scalar(select(ClipThumbnail.jpeg).where(ClipThumbnail.clip_id == 4))
        session.execute(delete(ClipThumbnail).where(ClipThumbnail.clip_id.in_([1, 2, 3])))
        session.execute(update(Clip).where(Clip.id == 1).values(thumbnail="../../../../../../etc/passwd"))
        session.execute(update(Clip).where(Clip.id == 2).values(thumbnail="../catalog.sqlite3"))
        session.execute(update(Clip).where(Clip.id == 3).values(thumbnail="1/legacy-00000.jpg"))
    legacy.write_bytes(jpeg)
    server = start_server(private_corpus.settings())
    for clip_id in (1, 2):
        response = httpx.get(f"{server.url}/clips/{clip_id}/thumbnail")
        assert response.status_code == 404 and b"root:" not in response.content and b"SQLite" not in response.content
    served = httpx.get(f"{server.url}/clips/3/thumbnail")
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg" and served.content == jpeg
    assert httpx.get(f"{server.url}/clips/4/thumbnail").content == jpeg  # from the catalog
