"""``tvr demo`` and ``tvr serve`` as a user runs them: real processes, real sockets."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

pytest_plugins = ["service_fixtures"]


def wait_for_line(log: Path, words: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    started = time.monotonic()
    while words not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() - started > timeout:
            raise AssertionError(f"no {words!r} after {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.mark.slow
def test_demo_builds_its_corpus_once_then_reuses_it(tmp_path, tiny_checkpoint) -> None:
    from service_fixtures import cli_env, free_port, start_cli_server, wait_ready

    data_dir = tmp_path / "demo"
    port = free_port()
    args = ["demo", "--port", str(port), "--videos", "6", "--data-dir", str(data_dir), "--checkpoint", tiny_checkpoint]
    env = cli_env()
    url = f"http://127.0.0.1:{port}"
    for run in range(2):
        log = tmp_path / f"demo{run}.log"
        process = start_cli_server(args, env, log)
        try:
            wait_for_line(log, f"open {url}", process, timeout=180)
            wait_ready(url, 60)
            answer = httpx.get(f"{url}/search", params={"q": "a red circle moves to the right", "k": 3}).json()
            assert len(answer["results"]) == 3
            captions = [
                json.loads(x)["caption"] for x in (data_dir / "demo-corpus" / "captions.jsonl").read_text().splitlines()
            ]
            assert {h["video"]["title"] for h in answer["results"]} <= set(captions)  # titles are the captions
            assert httpx.get(f"{url}/videos").json()["total"] == 6
            assert httpx.get(f"{url}/").status_code == 200
        finally:
            assert stop(process) in (0, 130), log.read_text()[-3000:]  # 130: the conventional status after Ctrl+C
        text = log.read_text()
        if run == 0:
            assert "6 indexed, 0 unchanged" in text, text[-3000:]
        else:
            assert "0 indexed, 6 unchanged" in text, text[-3000:]  # reused: nothing written or encoded again
    assert (data_dir / "catalog.sqlite3").is_file() and (data_dir / "index" / "CURRENT").is_file()


@pytest.mark.slow
def test_serve_refuses_a_checkpoint_that_did_not_build_the_index(private_corpus, tmp_path) -> None:
    import torch
    from service_fixtures import cli_env, free_port, start_cli_server

    from model import create_model, save_checkpoint

    torch.manual_seed(1)
    other = save_checkpoint(create_model("tiny"), tmp_path / "other").parent
    env = cli_env(private_corpus.data_dir, str(other))
    log = tmp_path / "serve.log"
    process = start_cli_server(["serve", "--port", str(free_port())], env, log)
    try:
        status = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert status == 1, text[-3000:]
    assert "was built with checkpoint" in text and "tvr ingest --switch-checkpoint" in text, text[-3000:]
    errors = [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"level": "error"' in line]
    assert errors and all("ts" in e and "logger" in e for e in errors)  # structured, one JSON object a line


@pytest.mark.slow
def test_demo_checkpoint_finds_red_circles_first(tmp_path, start_server) -> None:
    """The README's first search, on the demo corpus with the shipped demo checkpoint."""
    from model import load_encoder
    from service.demo import build_demo
    from service.settings import ServiceSettings

    settings = ServiceSettings(data_dir=tmp_path / "demo", checkpoint="demo", database_url="")
    encoder = load_encoder("demo")
    build_demo(settings, encoder, videos=60)  # the first 60 of the demo corpus: 4 red circles
    server = start_server(settings, encoder_factory=lambda _: encoder)
    videos = httpx.get(f"{server.url}/videos", params={"limit": 100}).json()["videos"]
    wanted = {t for v in videos if " red circle " in (t := v["title"]) and " moves to the right" in t.split(",")[0]}
    assert len(wanted) >= 2, [v["title"] for v in videos]  # red circles whose (first) motion is to the right
    answer = httpx.get(f"{server.url}/search", params={"q": "a red circle moves to the right", "k": 10}).json()
    titles = [h["video"]["title"] for h in answer["results"]]
    assert titles[0] in wanted, titles  # a red circle moving to the right first
    # Not asserted: the rest of the top 3. The demo model, trained on full captions only, ranks short queries'
    # runners-up loosely (a blue square third here; docs/BENCHMARKS.md, issue 15).
