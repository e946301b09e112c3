"""What the benches that serve a corpus in-process share: waiting for the app to be ready."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

READY_TIMEOUT_S = 300


def wait_ready(client: TestClient, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Return once ``GET /readyz`` answers 200 (the app has loaded its encoder and index); exit otherwise."""
    deadline = time.monotonic() + timeout_s
    while (answer := client.get("/readyz")).status_code != 200:
        if time.monotonic() > deadline:
            raise SystemExit(f"the server was not ready after {timeout_s} s: {answer.json()}")
        time.sleep(0.1)
