"""The compose stack's start-up sequence, outside Docker: real PostgreSQL, then the same commands in order.

db healthy -> ``tvr db upgrade`` (migrate) -> ``tvr ingest /videos`` (indexer) -> ``tvr serve`` (api) ->
``/readyz`` ready -> a search answered. Each step is a separate process, as the containers are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from indexer_fixtures import postgres_server_url, postgres_url, tiny_checkpoint  # noqa: F401 (fixtures)
from service_fixtures import free_port

from model.train.synth import write_synthetic_set

pytestmark = pytest.mark.slow


def _tvr(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "tvr_cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"tvr {' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_migrate_ingest_serve_search_against_postgresql(tmp_path: Path, postgres_url: str, tiny_checkpoint: str):  # noqa: F811
    library = tmp_path / "videos"
    write_synthetic_set(library, videos=6, seed=3)
    env = {
        **os.environ,
        "TVR_DATABASE_URL": postgres_url,
        "TVR_DATA_DIR": str(tmp_path / "data"),
        "TVR_CHECKPOINT": tiny_checkpoint,
        "TVR_API_KEY": "startup-test-key",
        "TVR_MEDIA_ROOTS": str(library),  # as compose mounts the library at /videos and serves only that
        "OMP_NUM_THREADS": "1",
    }
    _tvr("db", "upgrade", env=env)
    _tvr("db", "upgrade", env=env)  # the migrate container may run again on every `up`: a no-op
    _tvr("ingest", str(library / "videos"), env=env)
    stats = json.loads(_tvr("index", "stats", "--json", env=env).stdout.strip().splitlines()[-1])
    assert stats["videos"] == 6 and stats["failed"] == 0 and stats["vectors"] == stats["clips"] >= 6
    _tvr("index", "verify", env=env)

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tvr_cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "wb"),  # noqa: SIM115 (closed with the process)
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        ready = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert ready is not None and ready.status_code == 200, (tmp_path / "serve.log").read_text()[-3000:]
        answer = httpx.get(f"{base}/search", params={"q": "a red circle moves to the right", "k": 3}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["total"] >= 3 and len(body["results"]) == 3
        assert all(r["video"]["path"].startswith("videos/synth_") for r in body["results"])  # relative to the root
        media = httpx.get(f"{base}{body['results'][0]['media_url'].split('#')[0]}", timeout=30)
        assert (
            media.status_code == 200 and media.content == (library / body["results"][0]["video"]["path"]).read_bytes()
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
