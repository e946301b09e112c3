"""Fixtures for the service tests: a synthetic corpus ingested by the real pipeline, and real servers.

The corpus (12 captioned H.264 videos cut into 1-second clips, so videos have several clips and clips
start past 0) is built once per session with the tiny checkpoint. Servers are real uvicorn servers on
127.0.0.1 in a thread of the test process (``ThreadedServer``) or in a subprocess (``start_cli_server``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from indexer_fixtures import tiny_checkpoint, tiny_encoder  # noqa: F401 (fixtures)

API_KEY = "test-admin-key-0123456789"
VIDEOS = 12


@dataclass
class ServiceCorpus:
    data_dir: Path
    checkpoint: str
    titles: dict[str, str]  # absolute video path -> title (its caption)
    media_root: Path  # the folder holding the videos: the servers' TVR_MEDIA_ROOTS

    @property
    def videos(self) -> int:
        return len(self.titles)

    def file(self, shown: str) -> Path:
        """The video file of a path as the API shows it (relative to the media root)."""
        return self.media_root / shown

    def settings(self, **overrides: Any):  # type: ignore[no-untyped-def]
        from service.settings import ServiceSettings

        # float32 queries: the tests compare answers with exhaustive float32 search (the CPU default is int8,
        # tested on its own in test_service_search.py)
        values: dict[str, Any] = {
            "data_dir": self.data_dir,
            "checkpoint": self.checkpoint,
            "database_url": "",
            "text_dtype": "float32",
            "media_roots": [self.media_root],
        }
        return ServiceSettings(**{**values, **overrides})

    def copy(self, dest: Path) -> ServiceCorpus:
        """A private copy of the data directory (the videos stay shared) for tests that change it."""
        dest.mkdir(parents=True)
        shutil.copytree(self.data_dir / "index", dest / "index")
        source = sqlite3.connect(self.data_dir / "catalog.sqlite3")
        target = sqlite3.connect(dest / "catalog.sqlite3")
        with target:
            source.backup(target)
        source.close()
        target.close()
        return ServiceCorpus(dest, self.checkpoint, self.titles, self.media_root)


# what is said in which video (by its number in the synthetic set), and when (seconds)
SAID = {
    3: [(0.2, 0.9, "The volcano erupted at dawn.")],
    7: [(2.2, 2.9, "Volcanoes and their lava fields."), (0.1, 0.8, "A quiet morning at the harbour.")],
    9: [(1.1, 1.8, "Nothing but the harbour lights.")],
}

BROKEN = 5  # a video whose subtitle file is not one


def srt(cues: list[tuple[float, float, str]]) -> str:
    def clock(seconds: float) -> str:
        millis = round(seconds * 1000)
        return f"00:00:{millis // 1000:02d},{millis % 1000:03d}"

    return "".join(f"{n}\n{clock(a)} --> {clock(b)}\n{text}\n\n" for n, (a, b, text) in enumerate(cues, 1))


def build_corpus(
    root: Path, checkpoint: str, encoder: Any, videos: int = VIDEOS, *, speech: bool = False, database_url: str = ""
) -> ServiceCorpus:
    """``videos`` synthetic videos cut into 1-s clips, ingested into SQLite (or ``database_url``'s catalog,
    migrated here); with ``speech``, SRT files beside three of them (``SAID``) and a broken one beside
    ``BROKEN``."""
    from indexer.clips import ClipPolicy
    from indexer.db import make_engine, upgrade
    from indexer.pipeline import IngestOptions, ingest
    from indexer.settings import Settings
    from indexer.sources import discover
    from model.train.synth import write_synthetic_set

    captions = write_synthetic_set(root / "synth", videos=videos, seed=0, size=64, progress=False)
    rows = [json.loads(line) for line in captions.read_text().splitlines()]
    if speech:
        for number, cues in SAID.items():
            (root / "synth" / rows[number]["video"]).with_suffix(".srt").write_text(srt(cues))
        (root / "synth" / rows[BROKEN]["video"]).with_suffix(".en.srt").write_text("this is no subtitle file\n")
    manifest = root / "synth" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"path": r["video"], "title": r["caption"]}) + "\n" for r in rows))
    if database_url:  # a server catalog is migrated by `tvr db upgrade`, not by ingestion
        engine = make_engine(database_url)
        upgrade(engine)
        engine.dispose()
    settings = Settings(data_dir=root / "data", checkpoint=checkpoint, database_url=database_url)
    summary = ingest(
        settings,
        discover([], manifest),
        IngestOptions(workers=0, progress=False, policy=ClipPolicy(single_max=1.0, window=1.0, stride=1.0)),
        encoder=encoder,
    )
    assert summary.indexed == videos and not summary.failed, summary
    titles = {str((root / "synth" / r["video"]).resolve()): r["caption"] for r in rows}
    return ServiceCorpus(settings.data_dir, checkpoint, titles, (root / "synth").resolve())


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: str, tiny_encoder) -> ServiceCorpus:  # noqa: F811
    return build_corpus(tmp_path_factory.mktemp("speech"), tiny_checkpoint, tiny_encoder, speech=True)


@pytest.fixture(scope="session")
def service_corpus(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: str, tiny_encoder) -> ServiceCorpus:  # noqa: F811
    return build_corpus(tmp_path_factory.mktemp("service"), tiny_checkpoint, tiny_encoder)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadedServer:
    """``create_app(settings, **options)`` under a real uvicorn server on a free port, in a thread of this process."""

    def __init__(self, settings, encoder_factory: Callable[[Any], Any] | None = None, **options: Any) -> None:  # type: ignore[no-untyped-def]
        import uvicorn

        from service.app import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings, encoder_factory=encoder_factory, **options)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False, lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.app.state.resources.on_fatal = lambda _: setattr(self.server, "should_exit", True)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def resources(self):  # type: ignore[no-untyped-def]
        return self.app.state.resources

    def start(self, ready: bool = True, timeout: float = 60) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        if ready:
            wait_ready(self.url, deadline - time.monotonic())
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> ThreadedServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def wait_ready(url: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=5)
            last = response.json()
            if response.status_code == 200:
                return last
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout} s: {last}")


@pytest.fixture(scope="session")
def live_server(service_corpus: ServiceCorpus) -> Iterator[ThreadedServer]:
    """The shared read-only server over the session corpus (admin key set; loads the checkpoint itself)."""
    with ThreadedServer(service_corpus.settings(api_key=API_KEY)).start() as server:
        yield server


@pytest.fixture(scope="session")
def api_key() -> str:
    return API_KEY


@pytest.fixture
def private_corpus(service_corpus: ServiceCorpus, tmp_path: Path) -> ServiceCorpus:
    """A copy of the session corpus's data directory that a test may change."""
    return service_corpus.copy(tmp_path / "data")


@pytest.fixture
def start_server() -> Iterator[Callable[..., ThreadedServer]]:
    """``start_server(settings, encoder_factory=None, ready=True, **options)``: a started server (``options``:
    ``create_app``'s, such as ``demo_queries``), stopped after the test."""
    servers: list[ThreadedServer] = []

    def start(settings, encoder_factory=None, ready: bool = True, **options: Any) -> ThreadedServer:  # type: ignore[no-untyped-def]
        server = ThreadedServer(settings, encoder_factory, **options)
        servers.append(server)
        return server.start(ready=ready)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def client(live_server: ThreadedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        yield http


def cli_env(data_dir: Path | None = None, checkpoint: str | None = None, **extra: str) -> dict[str, str]:
    """This environment without TVR_* variables, plus the given ones; one OpenMP thread per server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TVR_")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    if data_dir is not None:
        env["TVR_DATA_DIR"] = str(data_dir)
    if checkpoint is not None:
        env["TVR_CHECKPOINT"] = checkpoint
    return env


def start_cli_server(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``tvr ARGS`` as a subprocess (the installed entry point's module), output into ``log``."""
    handle = open(log, "wb")  # noqa: SIM115 (closed with the process by the caller's cleanup)
    return subprocess.Popen([sys.executable, "-m", "tvr_cli", *args], env=env, stdout=handle, stderr=subprocess.STDOUT)


@dataclass
class Exact:
    """Exhaustive search over the catalog's stored embeddings: what the service must agree with."""

    clip_ids: Any  # int64 [n]
    video_ids: Any  # int64 [n]
    vectors: Any  # float32 [n, dim]
    encoder: Any

    def scores(self, query: str) -> dict[int, float]:
        vector = self.encoder.encode_text([query]).numpy()[0]
        return dict(zip(self.clip_ids.tolist(), (self.vectors @ vector).tolist(), strict=True))

    def ranking(self, query: str) -> list[tuple[int, float]]:
        return sorted(self.scores(query).items(), key=lambda item: -item[1])

    def video_of(self, clip_id: int) -> int:
        return int(self.video_ids[self.clip_ids.tolist().index(clip_id)])


@pytest.fixture(scope="session")
def exact(service_corpus: ServiceCorpus, tiny_encoder) -> Exact:  # noqa: F811
    import numpy as np
    from sqlalchemy import create_engine, select

    from indexer.catalog import Clip

    engine = create_engine(f"sqlite:///{service_corpus.data_dir / 'catalog.sqlite3'}")
    with engine.connect() as connection:
        rows = connection.execute(select(Clip.id, Clip.video_id, Clip.embedding).order_by(Clip.id)).all()
    engine.dispose()
    return Exact(
        np.array([r[0] for r in rows], np.int64),
        np.array([r[1] for r in rows], np.int64),
        np.stack([np.frombuffer(r[2], np.float32) for r in rows]),
        tiny_encoder,
    )
