"""The pool of decoding processes: tasks in, outcomes out, and a decoder crash contained to its own file.

Decoders are C libraries: a corrupt file can kill the process that reads it. When a worker dies, Python's
process pool breaks and every task in it is lost, so the tasks that were in the pool are retried one at a
time; a task that kills a worker twice fails its file, once a healthy worker has shown that the crashes are
the file's and not the machine's. Workers start from a fork server that has imported the decoding modules
once, so a replaced pool is ready in a moment.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any, Generic, TypeVar

from .decode import describe_error, init_worker
from .errors import IndexerError

log = logging.getLogger(__name__)

Owner = TypeVar("Owner")
CRASH_MESSAGE = "the decoder crashed (its worker process died) while reading this file"

# Imported once by the fork server, so that each decoding worker starts in a moment (missing ones are skipped).
# A worker re-runs the main script's imports (the ``tvr`` command: tvr_cli and what it registers), so those
# are here too; "__main__" itself is ignored by Python before 3.13 (the fork server is not told its path).
FORKSERVER_PRELOAD = (
    "__main__",
    "tvr_cli",
    "indexer.workers",
    "indexer.decode",
    "model.video",
    "model.preprocess",
    "decord",
    "av",
    "PIL.Image",
)


def worker_context() -> BaseContext:
    """``forkserver`` where the platform has it, else ``spawn``; never plain ``fork`` (torch's threads)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([*FORKSERVER_PRELOAD])
        return context
    return multiprocessing.get_context("spawn")


def default_workers() -> int:
    """One decoding process per core, leaving one core to the encoder and the catalog writes."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass
class Task(Generic[Owner]):
    """A call to run in a worker, and what the caller wants back with its outcome."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    owner: Owner
    crashes: int = 0  # times a worker died while running it


@dataclass
class Outcome(Generic[Owner]):
    owner: Owner
    result: Any = None
    error: str | None = None  # one line for the catalog when the call raised or its worker kept dying


class InlineExecutor:
    """Runs tasks in this process at submit time (``--workers 0``: debugging, profiling)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


class DecodePool(Generic[Owner]):
    """Up to ``max_inflight`` tasks in ``workers`` processes (0: in this process).

    ``is_stale(owner)`` says a queued task is no longer wanted (its video failed meanwhile); ``has_work()``
    whether the caller still has tasks to submit (to tell a dying machine from a few bad files).
    """

    def __init__(
        self,
        workers: int,
        max_inflight: int,
        *,
        is_stale: Callable[[Owner], bool] = lambda _: False,
        has_work: Callable[[], bool] = lambda: False,
    ) -> None:
        self.workers, self.max_inflight = workers, max_inflight
        self._is_stale, self._has_work = is_stale, has_work
        self._executor = self._new_executor()
        self._inflight: dict[Future[Any], Task[Owner]] = {}
        self._retries: deque[Task[Owner]] = deque()  # tasks that were in the pool when a worker died
        self._isolating = False  # a retried task runs alone
        self._finished = 0  # tasks a worker completed (with a result or an exception)
        self._doomed: list[Task[Owner]] = []  # killed a worker twice; failed once a worker proves healthy

    @property
    def busy(self) -> bool:
        return bool(self._inflight)

    @property
    def has_retries(self) -> bool:
        return bool(self._retries)

    def fill(self, next_task: Callable[[], Task[Owner] | None], has_room: Callable[[], bool]) -> None:
        """Submit tasks (retries first, each alone) while the pool and the caller have room."""
        while len(self._inflight) < self.max_inflight and has_room() and not self._isolating:
            if self._retries:
                if self._inflight:
                    return  # a task that was in the pool when a worker died runs alone
                task = self._retries.popleft()
                self._isolating = True
            else:
                maybe = next_task()
                if maybe is None:
                    return
                task = maybe
            if self._is_stale(task.owner):
                self._isolating = False
                continue
            self._inflight[self._executor.submit(task.fn, *task.args)] = task

    def wait(self, timeout: float | None) -> list[Outcome[Owner]]:
        """Outcomes of the tasks that finish within ``timeout`` seconds (None: at least one)."""
        done, _ = wait(self._inflight, timeout=timeout, return_when=FIRST_COMPLETED)
        return self._collect(done)

    def finished(self) -> list[Outcome[Owner]]:
        """Outcomes of the tasks already done, without waiting."""
        return self._collect({f for f in self._inflight if f.done()})

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _new_executor(self) -> ProcessPoolExecutor | InlineExecutor:
        if self.workers <= 0:
            return InlineExecutor()
        return ProcessPoolExecutor(self.workers, mp_context=worker_context(), initializer=init_worker)

    def _collect(self, done: set[Future[Any]]) -> list[Outcome[Owner]]:
        outcomes: list[Outcome[Owner]] = []
        crashed: list[Task[Owner]] = []
        for future in [f for f in self._inflight if f in done]:  # in submission order
            task = self._inflight.pop(future)
            if task.crashes:
                self._isolating = False
            try:
                outcomes.append(Outcome(task.owner, result=future.result()))
            except BrokenProcessPool:
                crashed.append(task)
                continue
            except Exception as exc:
                outcomes.append(Outcome(task.owner, error=describe_error(exc)))
            self._finished += 1
        if crashed:
            self._replace_pool(crashed)
        if self._doomed and self._finished > 0:
            outcomes += [Outcome(task.owner, error=CRASH_MESSAGE) for task in self._doomed]
            self._doomed = []
        elif self._doomed and (len(self._doomed) >= 3 or not (self._inflight or self._retries or self._has_work())):
            raise IndexerError(
                "the decoding worker processes die before finishing any task (see the log above); "
                "run with --workers 0 to decode in the main process"
            )
        return outcomes

    def _replace_pool(self, crashed: list[Task[Owner]]) -> None:
        crashed += list(self._inflight.values())  # the whole pool is gone
        self._inflight.clear()
        self._isolating = False
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()
        for task in crashed:
            task.crashes += 1
            (self._doomed if task.crashes >= 2 else self._retries).append(task)
        log.warning("a decoding worker died; %d tasks are retried one at a time", len(self._retries))
