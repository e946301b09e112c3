"""The command line: every indexer command through typer's CliRunner, and real ``tvr`` subprocesses
(one of them killed with SIGKILL mid-run)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from indexer_fixtures import tiny_checkpoint, write_small_corpus  # noqa: F401 (fixtures)
from typer.testing import CliRunner

from tvr_cli import app

REPO = Path(__file__).resolve().parents[1]
STATS_KEYS = {"videos", "clips", "vectors", "failed", "version", "factory", "checkpoint", "collections"}


@pytest.fixture
def cli_env(tmp_path: Path, tiny_checkpoint: str) -> dict[str, str]:  # noqa: F811
    return {
        "TVR_DATA_DIR": str(tmp_path / "data"),
        "TVR_CHECKPOINT": tiny_checkpoint,
        "TVR_DATABASE_URL": "",
        "TVR_DEVICE": "cpu",
    }


def invoke(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), env=env)


def test_ingest_stats_verify_rebuild_delete(tmp_path: Path, cli_env: dict[str, str]) -> None:
    folder = tmp_path / "videos"
    write_small_corpus(folder, 3)
    (folder / "broken.avi").write_bytes(b"RIFF....")
    (folder / "readme.md").write_text("hi")

    result = invoke(cli_env, "ingest", str(folder), "--workers", "0", "--batch-size", "2")
    assert result.exit_code == 3, result.output  # completed, one file failed
    assert "indexed 3, skipped 0 unchanged, failed 1, ignored 1 non-video files; 3 clips" in result.output
    assert f"failed: {(folder / 'broken.avi').resolve()}: " in result.output
    assert "index v000001: 3 vectors, Flat" in result.output

    stats = json.loads(invoke(cli_env, "index", "stats", "--json").output)
    assert set(stats) == STATS_KEYS
    assert {k: stats[k] for k in ("videos", "clips", "vectors", "failed", "version", "factory")} == {
        "videos": 4,
        "clips": 3,
        "vectors": 3,
        "failed": 1,
        "version": 1,
        "factory": "Flat",
    }
    text = invoke(cli_env, "index", "stats")
    assert text.exit_code == 0 and "vectors     3" in text.output

    verified = invoke(cli_env, "index", "verify")
    assert verified.exit_code == 0 and "ok: 3 clips, 3 vectors" in verified.output

    rebuilt = invoke(cli_env, "index", "rebuild", "--factory", "HNSW8,Flat")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "index v000002: 3 vectors, HNSW8,Flat" in rebuilt.output

    with sqlite3.connect(tmp_path / "data" / "catalog.sqlite3") as db:
        (first_id,) = db.execute("SELECT id FROM videos WHERE path LIKE '%v0_000.mp4'").fetchone()
    deleted = invoke(cli_env, "delete", str(first_id), str(folder / "v0_002.mp4"))  # by id and by path
    assert deleted.exit_code == 0, deleted.output
    assert deleted.output.count("deleted video") == 2 and "index v000003: 1 vectors" in deleted.output
    assert invoke(cli_env, "index", "verify").exit_code == 0
    stats = json.loads(invoke(cli_env, "index", "stats", "--json").output)
    assert (stats["videos"], stats["vectors"], stats["failed"], stats["factory"]) == (2, 1, 1, "HNSW8,Flat")


def test_verify_names_what_disagrees(tmp_path: Path, cli_env: dict[str, str]) -> None:
    folder = tmp_path / "videos"
    write_small_corpus(folder, 2)
    assert invoke(cli_env, "ingest", str(folder), "--workers", "0").exit_code == 0
    db = sqlite3.connect(tmp_path / "data" / "catalog.sqlite3")
    with db:
        (video_id, clip_id) = db.execute("SELECT video_id, id FROM clips ORDER BY id DESC").fetchone()
        db.execute("UPDATE videos SET status = 'failed' WHERE id = ?", (video_id,))  # its clip lacks a video
    db.close()
    result = invoke(cli_env, "index", "verify")
    assert result.exit_code == 1
    assert f"video {video_id} is failed but has 1 clips" in result.output
    assert f"vectors without a clip of an indexed video: {clip_id}" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest"], "nothing to ingest"),
        (["ingest", "/no/such/folder"], "/no/such/folder: no such file or folder"),
        (["ingest", ".", "--shard", "3/2"], "--shard '3/2': expected 1 <= I <= N"),
        (["ingest", ".", "--shard", "x"], "expected I/N"),
        (["ingest", ".", "--device", "tpu"], "--device 'tpu': expected cpu or cuda"),
        (["ingest", ".", "--window", "10", "--stride", "20"], "would leave gaps"),
        (["ingest", ".", "--checkpoint", "/no/such/ckpt"], "checkpoint '/no/such/ckpt' not found"),
        (["delete", "999"], "no such video: 999"),
        (["index", "rebuild"], "nothing to build"),
    ],
)
def test_user_errors_are_one_clean_message(
    args: list[str], message: str, cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(cli_env, *args)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output


def test_bad_manifest_and_unreachable_database(tmp_path: Path, cli_env: dict[str, str]) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text("file,title\na.mp4,A\n")
    result = invoke(cli_env, "ingest", "--manifest", str(manifest))
    assert result.exit_code == 1 and "the header must name a 'path' column" in result.output
    (tmp_path / "list.jsonl").write_text('{"path": "a.mp4"}\n{oops\n')
    result = invoke(cli_env, "ingest", "--manifest", str(tmp_path / "list.jsonl"))
    assert result.exit_code == 1 and "list.jsonl:2: not valid JSON" in result.output
    env = {**cli_env, "TVR_DATABASE_URL": "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"}
    result = invoke(env, "index", "stats")
    assert result.exit_code == 1 and "Error:" in result.output and "Traceback" not in result.output
    assert "secret" not in result.output


def _tvr_command() -> list[str]:
    script = shutil.which("tvr")
    return [script] if script else [sys.executable, "-m", "tvr_cli"]


def _indexed_count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT count(*) FROM videos WHERE status = 'indexed'").fetchone()[0]
    except sqlite3.Error:  # not created or not migrated yet
        return 0


def _live_members(pgid: int) -> list[int]:
    """Processes of a process group that are still running (zombies awaiting a reaper do not count)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process groups from /proc (Linux)")
def test_sigkill_mid_run_loses_nothing_and_the_rerun_finishes(tmp_path: Path, cli_env: dict[str, str]) -> None:
    count = 40
    folder = tmp_path / "videos"
    write_small_corpus(folder, count)
    db = tmp_path / "data" / "catalog.sqlite3"
    args = ("ingest", str(folder), "--workers", "1", "--batch-size", "1")
    process = subprocess.Popen(
        [*_tvr_command(), *args],
        cwd=REPO,
        env={**os.environ, **cli_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while _indexed_count(db) < 1:
        assert process.poll() is None, "the ingest ended before its first commit"
        assert time.monotonic() < deadline, "no video committed within 240 s"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    committed = _indexed_count(db)
    assert 1 <= committed < count, f"killed too late: {committed} of {count} committed"
    deadline = time.monotonic() + 30  # decoding workers and the fork server notice and exit
    while _live_members(process.pid):
        assert time.monotonic() < deadline, f"processes left behind: {_live_members(process.pid)}"
        time.sleep(0.1)

    rerun = subprocess.run(  # a real `tvr ingest` to the end (decoding in-process: it starts faster)
        [*_tvr_command(), *args[:-4], "--workers", "0", "--batch-size", "1"],
        cwd=REPO,
        env={**os.environ, **cli_env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"indexed {count - committed}, skipped {committed} unchanged, failed 0" in rerun.stdout
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT path, status, attempts FROM videos").fetchall()
        clips = conn.execute("SELECT video_id, position FROM clips").fetchall()
        runs = conn.execute("SELECT status FROM ingestion_runs ORDER BY id").fetchall()
    assert sorted(r[0] for r in rows) == sorted(str(p.resolve()) for p in folder.iterdir())
    assert {r[1] for r in rows} == {"indexed"} and {r[2] for r in rows} == {1}  # every video encoded once
    assert len(clips) == count and len(set(clips)) == count
    assert runs == [("interrupted",), ("finished",)]  # the rerun found the killed run's process gone
    verify = invoke(cli_env, "index", "verify")
    assert verify.exit_code == 0, verify.output
    assert f"ok: {count} clips, {count} vectors" in verify.output
