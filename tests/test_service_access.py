"""Who may see what, over real HTTP: only indexed videos inside the media roots are served; failed entries and
server paths only to the admin; with a read key, nothing but the health checks and the page without it.

The catalog is made by the real pipeline from a manifest that names two real videos in the library, one
real video elsewhere, and two secrets outside the library (a password file and a key file), which the
indexer records as failed videos.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from indexer_fixtures import colored, tiny_checkpoint, tiny_encoder  # noqa: F401 (fixtures)
from media import write_video

pytest_plugins = ["service_fixtures"]

ADMIN = "access-admin-key-0123456789"
READER = "access-read-key-0123456789"
PASSWORD = b"password=hunter2-do-not-serve"


@dataclass
class Library:
    root: Path  # the media root
    data_dir: Path
    checkpoint: str
    secrets: list[Path]
    elsewhere: Path  # an indexed video outside the media root

    def settings(self, **overrides):  # type: ignore[no-untyped-def]
        from service.settings import ServiceSettings

        values = {
            "data_dir": self.data_dir,
            "checkpoint": self.checkpoint,
            "database_url": "",
            "text_dtype": "float32",
            "media_roots": [self.root],
            "api_key": ADMIN,
        }
        return ServiceSettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint, tiny_encoder) -> Library:  # noqa: F811
    from indexer.pipeline import IngestOptions, ingest
    from indexer.settings import Settings
    from indexer.sources import discover

    top = tmp_path_factory.mktemp("access")
    root, outside = top / "library", top / "private"
    for i in range(2):
        write_video(root / "news" / f"clip{i}.mp4", colored(8, 32, i), fps=4)
    write_video(outside / "elsewhere.mp4", colored(8, 32, 7), fps=4)
    secrets = [outside / "passwords.txt", outside / "server.key"]
    secrets[0].write_bytes(PASSWORD)
    secrets[1].write_bytes(b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n")
    manifest = top / "manifest.jsonl"
    rows = [root / "news" / "clip0.mp4", root / "news" / "clip1.mp4", outside / "elsewhere.mp4", *secrets]
    manifest.write_text("".join(json.dumps({"path": str(p)}) + "\n" for p in rows))
    settings = Settings(data_dir=top / "data", checkpoint=tiny_checkpoint, database_url="")
    summary = ingest(settings, discover([], manifest), IngestOptions(workers=0, progress=False), encoder=tiny_encoder)
    assert summary.indexed == 3 and sorted(Path(p).name for p, _ in summary.failed) == ["passwords.txt", "server.key"]
    return Library(
        root.resolve(), settings.data_dir, tiny_checkpoint, [s.resolve() for s in secrets], outside / "elsewhere.mp4"
    )


@pytest.fixture(scope="module")
def server(library: Library):  # type: ignore[no-untyped-def]
    from service_fixtures import ThreadedServer

    with ThreadedServer(library.settings()).start() as running:
        yield running


def ids_by_name(http: httpx.Client) -> dict[str, dict]:
    videos = http.get("/videos", params={"status": "failed"}).json()["videos"]
    videos += http.get("/videos", params={"status": "indexed"}).json()["videos"]
    return {Path(v["path"]).name: v for v in videos}


def test_failed_entries_and_their_files_are_never_served_to_anonymous_clients(server, library: Library) -> None:
    anonymous = httpx.Client(base_url=server.url, timeout=30)
    admin = httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": ADMIN})
    everything = ids_by_name(admin)
    for secret in library.secrets:
        video = everything[secret.name]
        assert video["status"] == "failed" and video["path"] == str(secret) and video["error"]  # the admin sees why
        for client in (anonymous, admin):  # a non-video is never streamed, to anyone
            media = client.get(f"/videos/{video['id']}/media")
            assert media.status_code == 404 and PASSWORD not in media.content and b"PRIVATE" not in media.content
        assert anonymous.get(f"/videos/{video['id']}").status_code == 404
    listing = anonymous.get("/videos", params={"status": "failed"})
    assert listing.status_code == 401 and "admin key" in listing.json()["detail"]
    assert anonymous.get("/videos", params={"status": "pending"}).status_code == 401
    page = anonymous.get("/videos").json()
    assert {v["path"] for v in page["videos"]} == {"news/clip0.mp4", "news/clip1.mp4"} and page["total"] == 2
    assert all(v["status"] == "indexed" and v["error"] is None for v in page["videos"])


def test_only_files_inside_the_media_roots_are_served_with_paths_relative_to_them(server, library: Library) -> None:
    anonymous = httpx.Client(base_url=server.url, timeout=30)
    admin = httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": ADMIN})
    everything = ids_by_name(admin)
    outside = everything["elsewhere.mp4"]
    assert outside["status"] == "indexed" and outside["path"] == str(library.elsewhere.resolve())
    assert anonymous.get(f"/videos/{outside['id']}").status_code == 404
    assert anonymous.get(f"/videos/{outside['id']}/media").status_code == 404
    assert admin.get(f"/videos/{outside['id']}/media").status_code == 404  # outside the roots: never served
    for clip in admin.get(f"/videos/{outside['id']}").json()["clips"]:
        assert anonymous.get(clip["thumbnail_url"]).status_code == 404
    inside = everything["clip0.mp4"]
    assert anonymous.get(f"/videos/{inside['id']}/media").content == (library.root / "news" / "clip0.mp4").read_bytes()
    found = anonymous.get("/search", params={"q": "a video", "k": 100}).json()
    assert {r["video"]["path"] for r in found["results"]} == {"news/clip0.mp4", "news/clip1.mp4"}
    for answer in (found, anonymous.get("/videos").json(), anonymous.get(f"/videos/{inside['id']}").json()):
        assert str(library.root.parent) not in json.dumps(answer)  # no server path reaches an anonymous client


def test_a_link_planted_after_ingestion_cannot_lead_outside_the_roots(library: Library, start_server, tmp_path) -> None:
    import shutil

    from sqlalchemy import create_engine, text

    data = tmp_path / "data"
    shutil.copytree(library.data_dir, data)
    planted = library.root / "news" / "planted.mp4"
    os.symlink(library.secrets[0], planted)
    try:
        engine = create_engine(f"sqlite:///{data / 'catalog.sqlite3'}")
        with engine.begin() as connection:  # as if the file had been a video when it was indexed
            connection.execute(
                text("UPDATE videos SET path = :planted WHERE path LIKE :clip"),
                {"planted": str(planted), "clip": "%clip1.mp4"},
            )
            video_id = connection.execute(text("SELECT id FROM videos WHERE path = :p"), {"p": str(planted)}).scalar()
        engine.dispose()
        server = start_server(library.settings(data_dir=data))
        media = httpx.get(f"{server.url}/videos/{video_id}/media")
        assert media.status_code == 404 and PASSWORD not in media.content
    finally:
        planted.unlink()


def test_without_media_roots_answers_show_file_names_only(library: Library, start_server) -> None:
    server = start_server(library.settings(media_roots=[]))
    videos = httpx.get(f"{server.url}/videos").json()["videos"]
    assert sorted(v["path"] for v in videos) == ["clip0.mp4", "clip1.mp4", "elsewhere.mp4"]


def test_a_read_key_guards_every_route_but_health_and_the_page(library: Library, start_server) -> None:
    server = start_server(library.settings(read_api_key=READER))
    schema = httpx.get(f"{server.url}/openapi.json", headers={"X-API-Key": READER}).json()
    video_id = httpx.get(f"{server.url}/videos", headers={"X-API-Key": READER}).json()["videos"][0]["id"]
    samples = {"video_id": str(video_id), "clip_id": "1", "job_id": "x"}
    gets = [path.format(**samples) for path, methods in schema["paths"].items() if "get" in methods]
    needs_words = ("/search", f"/videos/{video_id}/moments")
    guarded = [p + "?q=a+video" if p in needs_words else p for p in gets if p not in ("/healthz", "/readyz")]
    guarded += ["/openapi.json", "/docs"]
    assert "/metrics" in guarded and f"/videos/{video_id}/media" in guarded
    assert f"/videos/{video_id}/moments?q=a+video" in guarded
    for path in guarded:
        bare = httpx.get(server.url + path)
        assert bare.status_code == 401, (path, bare.status_code)
        assert httpx.get(server.url + path, headers={"X-API-Key": "a-wrong-key-0123456789"}).status_code == 401
        if not path.startswith("/admin/"):
            assert httpx.get(server.url + path, headers={"X-API-Key": READER}).status_code == 200, path
            assert httpx.get(server.url + path, cookies={"tvr_key": READER}).status_code == 200, path
            assert httpx.get(server.url + path, headers={"X-API-Key": ADMIN}).status_code == 200, path
    assert httpx.post(f"{server.url}/search", json={"q": "a video"}).status_code == 401
    for open_path in ("/healthz", "/readyz", "/", "/static/app.js"):
        assert httpx.get(server.url + open_path).status_code == 200, open_path
    assert READER not in httpx.get(server.url + "/").text
