"""Background jobs for admin work that must not hold a request open (republishing the index).

One job runs at a time, in submission order, as a task of the event loop that hands its blocking part to a
worker thread: never the search thread, so queries keep being answered meanwhile. A job's state is kept in
memory (the newest ``KEEP_JOBS``) for ``GET /admin/jobs/{id}``; it is lost with the process, which is fine
for work the next ingest or delete redoes anyway.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

log = logging.getLogger(__name__)

KEEP_JOBS = 1000
JobWork = Callable[[], Awaitable[int | None]]  # returns the index version it left served, if any


class JobState(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


@dataclass
class Job:
    id: str
    kind: str
    state: JobState = JobState.queued
    error: str | None = None
    index_version: int | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    finished_at: datetime | None = None


class JobRunner:
    def __init__(self, keep: int = KEEP_JOBS) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._turn = asyncio.Lock()
        self._keep = keep

    def submit(self, kind: str, work: JobWork) -> Job:
        """Queue ``work`` behind the jobs already submitted; returns its record at once."""
        job = Job(id=uuid.uuid4().hex, kind=kind)
        self._jobs[job.id] = job
        task = asyncio.create_task(self._run(job, work), name=f"tvr-job-{kind}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def wait_idle(self) -> None:
        """Until every job submitted so far has finished (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(self, job: Job, work: JobWork) -> None:
        async with self._turn:
            job.state = JobState.running
            try:
                job.index_version = await work()
                job.state = JobState.succeeded
            except asyncio.CancelledError:
                job.state, job.error = JobState.failed, "the server stopped before the job finished"
                raise
            except Exception as exc:
                log.exception("job %s (%s) failed", job.id, job.kind)
                job.state, job.error = JobState.failed, f"{type(exc).__name__}: {exc}"
            finally:
                job.finished_at = datetime.now(timezone.utc)
                self._forget_oldest()

    def _forget_oldest(self) -> None:
        """Keep at most ``keep`` jobs: the oldest finished ones go first, unfinished ones always stay."""
        finished = [j.id for j in self._jobs.values() if j.finished_at is not None]
        for job_id in finished[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[job_id]
