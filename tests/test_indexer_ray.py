"""``tvr ingest --ray`` on a real local Ray instance: the same catalog as the local pipeline, a worker or
an actor killed mid-file, a driver killed and rerun, NVDEC in the encoder actors (a stand-in decoding on the
CPU) with its per-file fallback to CPU tasks, and the message when Ray is missing.

Most runs go through the real ``tvr`` command in a subprocess, as a user (or ``ray job submit``) runs them;
the cluster tests share one ``ray start --head`` instance with 2 CPUs. The NVDEC tests ingest in this process
(the stand-in is a test function) on a Ray instance of their own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import test_indexer_nvdec as nvdec_fakes  # the GPU path's stand-ins: PyAV's planes converted on the CPU
from indexer_fixtures import (  # noqa: F401 (fixtures)
    format_corpus,
    make_settings,
    run_ingest,
    tiny_checkpoint,
    tiny_encoder,
    write_small_corpus,
)
from media import write_video
from typer.testing import CliRunner

from indexer.errors import IndexerError
from indexer.ray_runner import RayOptions
from tvr_cli import app

REPO = Path(__file__).resolve().parents[1]
TVR = [sys.executable, "-m", "tvr_cli"] if not shutil.which("tvr") else ["tvr"]
pytestmark = pytest.mark.slow


def _env(data_dir: Path, checkpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TVR_", "RAY_"))}
    return (
        env
        | {
            "TVR_DATA_DIR": str(data_dir),
            "TVR_CHECKPOINT": checkpoint,
            "TVR_DEVICE": "cpu",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        | extra
    )


def _tvr(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TVR, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[dict[str, str]]:
    """A head node with 2 CPUs, token authentication and a job server, as `ray start --head` makes one;
    yields what a driver's (or a `ray job` command's) environment needs to reach it."""
    temp = tempfile.mkdtemp(prefix="tvr-ray-", dir="/tmp")  # Ray's socket paths must stay short
    port, dashboard = _free_port(), _free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **auth}
    started = subprocess.run(
        ["ray", "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         "--disable-usage-stats"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    joined = {"TVR_RAY_ADDRESS": f"127.0.0.1:{port}", "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard}", **auth}
    try:
        _wait_for_the_job_server(env | joined)
        yield joined
    finally:
        _stop_cluster(temp, f"--address={_node_ip()}:{port}".encode())


def _node_ip() -> str:
    import ray._private.services

    return str(ray._private.services.get_node_ip_address())


def _wait_for_the_job_server(env: dict[str, str]) -> None:
    """The head answers before its job agent takes submissions: submit a no-op until one is accepted."""
    deadline = time.monotonic() + 180
    while True:
        probe = subprocess.run(
            ["ray", "job", "submit", "--no-wait", "--", "true"], env=env, capture_output=True, text=True, timeout=60
        )
        if probe.returncode == 0:
            return
        assert time.monotonic() < deadline, probe.stdout + probe.stderr
        time.sleep(1)


def _stop_cluster(temp: str, address: bytes) -> None:
    """Kill this cluster's processes and their descendants (`ray stop` would stop every cluster on the
    machine; Ray's agents rename themselves, so they are found as children)."""
    parents: dict[int, int] = {}
    mine: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid = int(stat.parent.name)
            parents[pid] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
            if temp.encode() in cmdline or address in cmdline:
                mine.add(pid)
        except (OSError, ValueError, IndexError):  # gone meanwhile
            pass
    while grown := {pid for pid, parent in parents.items() if parent in mine} - mine:
        mine |= grown
    for pid in mine:
        with contextlib.suppress(OSError):  # gone meanwhile
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


def _catalog(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(data_dir / "catalog.sqlite3")


def _rows(data_dir: Path) -> dict[str, tuple]:
    """path -> (status, error, clip count, decoder)."""
    with _catalog(data_dir) as conn:
        rows = conn.execute(
            "SELECT v.path, v.status, v.error, COUNT(c.id), v.decoder FROM videos v "
            "LEFT JOIN clips c ON c.video_id = v.id GROUP BY v.id"
        ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def _embeddings(data_dir: Path) -> dict[tuple[str, int], np.ndarray]:
    with _catalog(data_dir) as conn:
        rows = conn.execute(
            "SELECT v.path, c.position, c.embedding FROM clips c JOIN videos v ON v.id = c.video_id"
        ).fetchall()
    return {(path, position): np.frombuffer(blob, np.float32) for path, position, blob in rows}


def _assert_each_video_once(data_dir: Path, folder: Path, clips_per_video: int) -> None:
    with _catalog(data_dir) as conn:
        videos = conn.execute("SELECT path, status, attempts FROM videos").fetchall()
        clips = conn.execute("SELECT video_id, position FROM clips").fetchall()
    assert sorted(v[0] for v in videos) == sorted(str(p.resolve()) for p in folder.iterdir())
    assert {v[1] for v in videos} == {"indexed"}
    assert len(clips) == len(set(clips)) == len(videos) * clips_per_video  # no clip twice, none missing


def _verify(env: dict[str, str]) -> None:
    verify = _tvr(env, "index", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_ray_ingest_matches_the_local_pipeline(tmp_path: Path, format_corpus, tiny_checkpoint: str) -> None:  # noqa: F811
    local_env = _env(tmp_path / "local", tiny_checkpoint)
    ray_env = _env(tmp_path / "ray", tiny_checkpoint)
    local = _tvr(local_env, "ingest", str(format_corpus.folder))
    on_ray = _tvr(ray_env, "ingest", str(format_corpus.folder), "--ray")  # a local instance, started and stopped

    assert local.returncode == on_ray.returncode == 3, on_ray.stdout + on_ray.stderr  # completed; bad files listed
    assert f"indexed {len(format_corpus.good)}, skipped 0 unchanged, failed {len(format_corpus.bad)}" in on_ray.stdout
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")  # statuses, reasons, clip counts, decoders
    ours, theirs = _embeddings(tmp_path / "ray"), _embeddings(tmp_path / "local")
    assert ours.keys() == theirs.keys() and len(ours) == sum(format_corpus.good.values())
    cosines = [float(ours[k] @ theirs[k] / np.linalg.norm(ours[k]) / np.linalg.norm(theirs[k])) for k in ours]
    assert min(cosines) >= 0.9999
    _verify(ray_env)


@pytest.mark.parametrize("role", ["decoder", "encoder"])
def test_a_worker_killed_mid_file_and_the_job_completes(
    tmp_path: Path,
    ray_cluster: dict[str, str],
    tiny_checkpoint: str,  # noqa: F811
    role: str,
) -> None:
    folder = tmp_path / "videos"
    write_small_corpus(folder, 4, seconds=40.0)  # 7 clips each: 4 chunks of 2, so the kill lands mid-file
    marker = tmp_path / "killed"
    env = _env(tmp_path / "data", tiny_checkpoint, TVR_TEST_KILL_ONCE=f"{role}:{marker}", **ray_cluster)

    run = _tvr(env, "ingest", str(folder), "--ray", "--batch-size", "2")  # the address: TVR_RAY_ADDRESS

    assert marker.exists(), f"the {role} was never killed"
    assert run.returncode == 0, run.stdout + run.stderr
    assert "indexed 4, skipped 0 unchanged, failed 0" in run.stdout
    _assert_each_video_once(tmp_path / "data", folder, clips_per_video=7)
    _verify(env)


def test_a_driver_killed_and_rerun_indexes_only_what_is_missing(
    tmp_path: Path,
    ray_cluster: dict[str, str],
    tiny_checkpoint: str,  # noqa: F811
) -> None:
    count = 24
    folder = tmp_path / "videos"
    write_small_corpus(folder, count)
    data_dir = tmp_path / "data"
    env = _env(data_dir, tiny_checkpoint, **ray_cluster)
    args = ("ingest", str(folder), "--ray", "--batch-size", "1", "--collection", "on-ray")
    driver = subprocess.Popen([*TVR, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while _indexed(data_dir) < 1:
        assert driver.poll() is None, "the ingest ended before its first commit"
        assert time.monotonic() < deadline, "no video committed within 240 s"
        time.sleep(0.01)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    committed = _indexed(data_dir)
    assert 1 <= committed < count, f"killed too late: {committed} of {count} committed"

    rerun = _tvr(env, *args)

    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"indexed {count - committed}, skipped {committed} unchanged, failed 0" in rerun.stdout
    _assert_each_video_once(data_dir, folder, clips_per_video=1)
    with _catalog(data_dir) as conn:
        runs = conn.execute("SELECT status FROM ingestion_runs ORDER BY id").fetchall()
        collections = conn.execute("SELECT DISTINCT collection FROM videos").fetchall()
    assert runs == [("interrupted",), ("finished",)]
    assert collections == [("on-ray",)]  # --collection reaches the driver's catalog writes, in both runs
    _verify(env)


def _indexed(data_dir: Path) -> int:
    try:
        with _catalog(data_dir) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM videos WHERE status = 'indexed'").fetchone()[0])
    except sqlite3.OperationalError:  # not created or migrated yet
        return 0


def test_without_ray_the_error_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    (tmp_path / "v.mp4").write_bytes(b"")

    result = CliRunner().invoke(app, ["ingest", str(tmp_path), "--ray", "--data-dir", str(tmp_path / "data")])

    assert result.exit_code == 1
    assert 'pip install "tvr[ray]"' in result.output
    assert not (tmp_path / "data").exists()  # refused before touching anything


def test_a_job_is_submitted_followed_stopped_and_rerun_with_ray_job_commands(
    tmp_path: Path,
    ray_cluster: dict[str, str],
    tiny_checkpoint: str,  # noqa: F811
) -> None:
    count = 200  # tiny files, one commit each: the job is still running when it is stopped
    folder = tmp_path / "videos"
    write_small_corpus(folder, count)
    data_dir = tmp_path / "data"
    env = _env(data_dir, tiny_checkpoint, **ray_cluster)
    job_env = {"env_vars": {k: v for k, v in env.items() if k.startswith("TVR_")}}
    entrypoint = ["tvr", "ingest", str(folder), "--ray", "--ray-address", "auto", "--batch-size", "1"]

    def ray_job(*args: str) -> str:
        done = subprocess.run(["ray", "job", *args], env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    job_id = _job_id(ray_job("submit", "--no-wait", "--runtime-env-json", json.dumps(job_env), "--", *entrypoint))
    deadline = time.monotonic() + 240
    while _indexed(data_dir) < 1:
        assert "FAILED" not in ray_job("status", job_id), ray_job("logs", job_id)
        assert time.monotonic() < deadline, "no video committed within 240 s"
        time.sleep(0.2)
    assert "running" in ray_job("status", job_id).lower()
    ray_job("stop", job_id)  # waits until the job has stopped
    assert "was stopped" in ray_job("status", job_id)
    committed = _indexed(data_dir)
    assert committed < count, "the job ended before it could be stopped"

    rerun = ray_job("submit", "--runtime-env-json", json.dumps(job_env), "--", *entrypoint)  # follows its log
    # the stopped driver may still finish the commit it was in when the status turned STOPPED, so the rerun
    # skips at least what was counted then; it indexes exactly the rest
    done = re.search(r"indexed (\d+), skipped (\d+) unchanged, failed 0", rerun)
    assert done is not None, rerun
    indexed, skipped = int(done.group(1)), int(done.group(2))
    assert skipped >= committed and indexed + skipped == count, rerun
    assert "succeeded" in ray_job("status", _job_id(rerun)).lower()
    _assert_each_video_once(data_dir, folder, clips_per_video=1)
    _verify(env)


def _job_id(output: str) -> str:
    found = re.search(r"raysubmit_\w+", output)
    assert found, output
    return found[0]


# --- NVDEC in the encoder actors (a stand-in on the CPU) -------------------------------------------------------


@pytest.fixture(scope="module")
def ray_here() -> Iterator[None]:
    """A Ray instance of this process's own (2 decoding CPUs and an encoder's), which ingest() joins; the
    stand-in decoders travel to its workers by value (they cannot import the tests)."""
    import ray
    from ray import cloudpickle  # Ray's own copy

    cloudpickle.register_pickle_by_value(nvdec_fakes)
    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(nvdec_fakes)


@pytest.fixture(scope="module")
def nvdec_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ray-nvdec") / "videos"
    write_video(folder / "small.mp4", nvdec_fakes.scene(10, 144, 192, 1), fps=5)
    write_video(folder / "long.mp4", nvdec_fakes.scene(80, 144, 192, 7), fps=2)  # 40 s: 7 clips
    write_video(folder / "late_long.mp4", nvdec_fakes.scene(80, 144, 192, 8), fps=2)  # gives up after a chunk
    write_video(folder / "other.webm", nvdec_fakes.scene(10, 48, 64, 9), fps=5, codec="vp9")  # "unsupported"
    (folder / "broken.mp4").write_bytes(b"not a video")
    return folder


def test_nvdec_on_ray_decodes_in_the_encoder_actors_and_falls_back_per_file(
    tmp_path: Path,
    ray_here: None,
    nvdec_corpus: Path,
    tiny_checkpoint: str,  # noqa: F811
    tiny_encoder,  # noqa: F811
) -> None:
    local = make_settings(tmp_path / "local", tiny_checkpoint)
    run_ingest(local, [nvdec_corpus], tiny_encoder, decoder="cpu", batch_size=3)
    on_ray = make_settings(tmp_path / "ray", tiny_checkpoint)

    summary = run_ingest(
        on_ray, [nvdec_corpus], tiny_encoder, batch_size=3, nvdec_sessions=2,
        gpu_decode=nvdec_fakes.giving_up_after_a_chunk, decoder="nvdec", ray=RayOptions(decoders=2, encoders=1),
    )  # fmt: skip

    assert summary.indexed == 4 and [Path(p).name for p, _ in summary.failed] == ["broken.mp4"]
    expected, got = nvdec_fakes.catalog_rows(local), nvdec_fakes.catalog_rows(on_ray)
    assert set(got) == set(expected)
    fallbacks = {"other.webm", "late_long.mp4"}  # unsupported; gave up after its first chunk (3 of 7 clips)
    for name, (video, vectors) in got.items():
        reference, reference_vectors = expected[name]
        assert (video.status, video.error) == (reference.status, reference.error), name
        if reference.error is None:
            assert video.decoder == ("pyav" if name in fallbacks else "nvdec"), name
            assert len(vectors) == len(reference_vectors), name
            cosines = [float(ours @ theirs) for ours, theirs in zip(vectors, reference_vectors, strict=True)]
            assert min(cosines) >= 0.999, name
    assert len(got["long.mp4"][1]) == 7
    with _catalog(on_ray.data_dir) as conn:
        clips = conn.execute("SELECT video_id, position FROM clips").fetchall()
    assert len(clips) == len(set(clips)) == 16  # each clip once
    verify = CliRunner().invoke(app, ["index", "verify"], env=_in_process_env(on_ray.data_dir))
    assert verify.exit_code == 0 and "ok: 16 clips, 16 vectors" in verify.output, verify.output


def test_nvdec_on_ray_is_chosen_by_auto_only_where_it_works(
    tmp_path: Path,
    ray_here: None,
    nvdec_corpus: Path,
    tiny_checkpoint: str,  # noqa: F811
    tiny_encoder,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    small = [nvdec_corpus / "small.mp4"]
    with caplog.at_level(logging.INFO, logger="indexer.nvdec"):
        run_ingest(make_settings(tmp_path / "auto", tiny_checkpoint), small, tiny_encoder, ray=RayOptions())
    assert "decoder: cpu, chosen by auto: NVDEC is not used because the encoder runs on cpu" in caplog.text
    with pytest.raises(IndexerError, match="--decoder nvdec cannot work here: the encoder runs on cpu, not a CUDA"):
        run_ingest(
            make_settings(tmp_path / "nvdec", tiny_checkpoint), small, tiny_encoder, decoder="nvdec", ray=RayOptions()
        )

    env = _in_process_env(tmp_path / "cli") | {"TVR_CHECKPOINT": tiny_checkpoint}
    result = CliRunner().invoke(app, ["ingest", *map(str, small), "--ray", "--decoder", "nvdec"], env=env)
    assert result.exit_code == 1 and "--decoder nvdec cannot work here: the encoder runs on cpu" in result.output

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="indexer.nvdec"):  # a decoder given: nothing to check
        summary = run_ingest(
            make_settings(tmp_path / "given", tiny_checkpoint), small, tiny_encoder,
            gpu_decode=nvdec_fakes.fake_gpu_decode, ray=RayOptions(),
        )  # fmt: skip
    assert summary.indexed == 1
    assert "decoder: nvdec (GPU decoding in the encoder actors), chosen by auto" in caplog.text
    rows = nvdec_fakes.catalog_rows(make_settings(tmp_path / "given", tiny_checkpoint))
    assert rows["small.mp4"][0].decoder == "nvdec"


def _in_process_env(data_dir: Path) -> dict[str, str | None]:
    return {"TVR_DATA_DIR": str(data_dir), "TVR_DATABASE_URL": "", "TVR_DEVICE": "cpu", "TVR_DECODER": None}
