"""Fixtures for the indexer tests: a tiny checkpoint, real encoded videos, SQLite and PostgreSQL catalogs.

PostgreSQL: ``TVR_TEST_POSTGRES_URL`` (a role allowed to CREATE DATABASE) if set, otherwise a throwaway
cluster started here with initdb + pg_ctl on a free port of 127.0.0.1 (as the ``postgres`` user when the
tests run as root). Without PostgreSQL binaries the PostgreSQL cases are skipped, except under ``CI``,
where that is a failure.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from media import moving_square, write_video

# --- PostgreSQL ----------------------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    if shutil.which("pg_ctl"):
        candidates.append(Path(shutil.which("pg_ctl")).parent)  # type: ignore[arg-type]
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class _Cluster:
    url: str  # server URL (database "postgres"); tests get databases of their own
    stop: Callable[[], None]


_CLUSTER: _Cluster | None = None


def _start_cluster() -> _Cluster:
    bindir = _pg_bindir()
    if bindir is None:
        message = "PostgreSQL binaries (initdb, pg_ctl) not found and TVR_TEST_POSTGRES_URL not set"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run the PostgreSQL tests", pytrace=False)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="tvr-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        user = pwd.getpwnam("postgres") if _has_user("postgres") else pwd.getpwnam("nobody")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", user.pw_name, "--"]
    data, log = root / "data", root / "server.log"
    port = _free_port()

    def run(*args: str) -> None:
        result = subprocess.run(prefix + list(args), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr[-2000:]}\n{tail}")

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "tvr", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")

    def stop() -> None:
        subprocess.run(
            prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)

    return _Cluster(f"postgresql+psycopg://tvr@127.0.0.1:{port}/postgres", stop)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """URL of a PostgreSQL server whose role may create databases (one cluster per test process)."""
    global _CLUSTER
    if os.environ.get("TVR_TEST_POSTGRES_URL"):
        return os.environ["TVR_TEST_POSTGRES_URL"]
    if _CLUSTER is None:
        _CLUSTER = _start_cluster()
        atexit.register(_CLUSTER.stop)
    return _CLUSTER.url


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"tvr_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty catalog database URL: an SQLite file, then a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    return request.getfixturevalue("postgres_url")


# --- model ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random tiny encoder saved as a project checkpoint folder (64 px, 12 frames, 64-d)."""
    from model import create_model, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(create_model("tiny"), path)
    return str(path)


# --- videos --------------------------------------------------------------------------------------------


def colored(num_frames: int, size: int, seed: int) -> np.ndarray:
    """A moving square whose colour depends on ``seed``: videos with distinct content."""
    rng = np.random.default_rng(seed)
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    return moving_square(num_frames, size, color)  # type: ignore[arg-type]


def write_small_corpus(
    folder: Path, count: int, *, seed: int = 0, seconds: float = 2.0, fps: float = 5.0
) -> list[Path]:
    """``count`` short H.264 mp4 files of 32x32 px with distinct content."""
    frames = max(1, round(seconds * fps))
    return [
        write_video(folder / f"v{seed}_{i:03d}.mp4", colored(frames, 32, seed * 1000 + i), fps=fps)
        for i in range(count)
    ]


def write_zero_frame_video(path: Path) -> Path:
    """A Matroska file with a video stream and no frames."""
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=10)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    container.start_encoding()
    container.close()
    return path


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@dataclass
class Corpus:
    """A folder of real files: ``good`` maps name -> expected clip count, ``bad`` name -> words of the
    recorded reason, ``ignored`` the non-video names a folder walk must skip."""

    folder: Path
    good: dict[str, int]
    bad: dict[str, str]
    ignored: list[str]


LONG_SECONDS = 120  # 10 s windows every 5 s: starts 0, 5, ..., 105, then (110, 120): 23 clips
LONG_CLIPS = 23


def write_format_corpus(folder: Path) -> Corpus:
    """Every kind of file the indexer must handle, tiny in pixels so it encodes in a moment."""
    folder.mkdir(parents=True, exist_ok=True)
    write_video(folder / "h264.mp4", colored(10, 32, 1), fps=5, codec="h264")
    write_video(folder / "vp9.webm", colored(10, 32, 2), fps=5, codec="vp9")
    write_video(folder / "mjpeg.avi", colored(10, 32, 3), fps=5, codec="mjpeg")
    write_video(folder / "odd_size.MOV", colored(10, 47, 4)[:, :33], fps=5)  # 47x33, upper-case suffix
    write_video(folder / "one_frame.mkv", colored(1, 32, 5), fps=5)
    vfr_times = [0.0, 0.1, 0.15, 0.5, 0.9, 1.6, 2.0, 3.1]
    write_video(folder / "sub" / "vfr.mp4", colored(len(vfr_times), 32, 6), codec="h264", timestamps=vfr_times)
    write_video(folder / "sub" / "long.m4v", colored(LONG_SECONDS * 2, 32, 7), fps=2, codec="h264")
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    whole = write_video(folder / "whole.webm", colored(100, 32, 8), fps=5, codec="vp9").read_bytes()
    (folder / "whole.webm").unlink()
    (folder / "truncated.webm").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.mp4").write_bytes(b"")
    write_zero_frame_video(folder / "zero_frames.mkv")
    write_audio_only(folder / "audio_only.mkv")
    (folder / "dangling.mp4").symlink_to(folder / "no-such-target.mp4")
    (folder / "notes.txt").write_text("not a video")
    (folder / "sub" / "cover.jpg").write_bytes(b"\xff\xd8")
    return Corpus(
        folder=folder,
        good={
            "h264.mp4": 1,
            "vp9.webm": 1,
            "mjpeg.avi": 1,
            "odd_size.MOV": 1,
            "one_frame.mkv": 1,
            "sub/vfr.mp4": 1,
            "sub/long.m4v": LONG_CLIPS,
        },
        bad={
            "corrupt.mp4": "not a video file",
            "truncated.webm": "truncated",
            "empty.mp4": "empty",
            "zero_frames.mkv": "no frames",
            "audio_only.mkv": "no video stream",
            "dangling.mp4": "No such file",  # a symbolic link to a missing file
        },
        ignored=["notes.txt", "sub/cover.jpg"],
    )


@pytest.fixture(scope="session")
def format_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """The corpus, written once per test session (copy it before changing files)."""
    return write_format_corpus(tmp_path_factory.mktemp("corpus") / "videos")


@pytest.fixture(scope="session")
def tiny_encoder(tiny_checkpoint: str):  # type: ignore[no-untyped-def]
    from model import load_encoder

    return load_encoder(tiny_checkpoint)


def make_settings(tmp_path: Path, checkpoint: str, database_url: str | None = None):  # type: ignore[no-untyped-def]
    from indexer.settings import Settings

    return Settings(data_dir=tmp_path / "data", database_url=database_url, checkpoint=checkpoint, device="cpu")


def run_ingest(settings, paths, encoder=None, manifest=None, **options):  # type: ignore[no-untyped-def]
    """Ingest in this process (decoding inline unless ``workers`` says otherwise)."""
    from indexer.pipeline import IngestOptions, ingest
    from indexer.sources import discover

    options.setdefault("workers", 0)
    options.setdefault("progress", False)
    return ingest(settings, discover(paths, manifest), IngestOptions(**options), encoder=encoder)


def crashing_decode(path: str, known_hash, spec, segment=None):  # type: ignore[no-untyped-def]
    """``decode_video`` that kills its worker process on files named ``crash*`` after their first chunk: a
    decoder segfault part-way through a file."""
    from indexer.decode import decode_video

    for event in decode_video(path, known_hash, spec, segment):
        yield event
        if Path(path).name.startswith("crash") and type(event).__name__ == "DecodedChunk":
            os._exit(3)


def crashing_once_in_a_segment_decode(path: str, known_hash, spec, segment=None):  # type: ignore[no-untyped-def]
    """``decode_video`` whose worker dies once, after the first chunk of a file's second segment (a
    ``.crashed`` file beside the video remembers it)."""
    from indexer.decode import decode_video

    marker = Path(path + ".crashed")
    for event in decode_video(path, known_hash, spec, segment):
        yield event
        if segment is not None and segment[0] > 0 and not marker.exists():
            marker.touch()
            os._exit(3)


def always_crashing_decode(path: str, known_hash, spec, segment=None):  # type: ignore[no-untyped-def]
    """A worker that cannot do anything (as when its interpreter cannot start)."""
    os._exit(3)
    yield  # a generator, as decode_video is
