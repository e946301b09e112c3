"""Run records: one catalog row per ``tvr ingest``, with its arguments and what it did.

A run killed outright (SIGKILL, a lost machine) cannot close its own record: it stays ``running`` until the
next run on the same host finds its process gone and marks it ``interrupted``.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .catalog import IngestionRun, RunStatus, utcnow
from .db import session_scope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunCounts:
    """What a run did, as its record keeps it."""

    indexed: int = 0
    skipped: int = 0
    failed: int = 0
    clips: int = 0


def start_run(
    sessions: sessionmaker[Session], *, checkpoint_id: str, args: dict[str, Any], discovered: int, ignored: int
) -> int:
    """Record a new run of this process (marking this host's dead runs interrupted); returns its id."""
    host = socket.gethostname()
    with session_scope(sessions) as session:
        for stale in session.scalars(
            select(IngestionRun).where(IngestionRun.status == RunStatus.running, IngestionRun.host == host)
        ):
            if stale.pid is not None and not process_alive(stale.pid):
                stale.status = RunStatus.interrupted
                log.warning("ingest run %d (pid %d) was interrupted: marked as such", stale.id, stale.pid)
        run = IngestionRun(
            host=host,
            pid=os.getpid(),
            checkpoint_id=checkpoint_id,
            args=args,
            discovered=discovered,
            ignored=ignored,
            status=RunStatus.running,
            indexed=0,
            skipped=0,
            failed=0,
            clips=0,
        )
        session.add(run)
        session.flush()
        return run.id


def finish_run(sessions: sessionmaker[Session], run_id: int, status: RunStatus, counts: RunCounts) -> None:
    """Close a run's record; a failure to do so is logged, never raised over the error that ended the run."""
    try:
        with session_scope(sessions) as session:
            run = session.get(IngestionRun, run_id)
            if run is not None:
                run.finished_at, run.status = utcnow(), status
                run.indexed, run.skipped, run.failed, run.clips = (
                    counts.indexed,
                    counts.skipped,
                    counts.failed,
                    counts.clips,
                )
    except Exception:
        log.exception("could not record the end of ingest run %d", run_id)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a reused pid counts as alive: never a false mark)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
