"""Decoding processes: each decodes one video at a time and streams its events back over its own pipe.

A worker runs ``decode.decode_video`` for a file and sends each event (the probe, then chunks of clips) as
soon as it is made, so a file is opened once however long it is, and memory stays bounded: a worker blocks
on its pipe until the encoder's process reads, which it does only when it has room for more clips.

Decoders are C libraries: a corrupt file can kill the process that reads it. Each worker has a pipe of its
own, so a death takes only its own file down: the file is decoded again on a fresh worker (its clips so far
are void), and a file that kills a worker twice fails, once a healthy worker has shown that the crashes are
the file's and not the machine's. Workers start from a fork server that has imported the decoding modules
once, so a replacement is ready in a moment.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any, Generic, Literal, TypeVar

from .decode import DecodedChunk, DecodeFailed, DecodeSpec, Probed, Segment, decode_video, describe_error, init_worker
from .errors import IndexerError

log = logging.getLogger(__name__)

Owner = TypeVar("Owner")
CRASH_MESSAGE = "the decoder crashed (its worker process died) while reading this file"
Event = Probed | DecodedChunk | DecodeFailed
DecodeFn = Callable[[str, str | None, DecodeSpec, Segment | None], Iterator[Event]]  # decode.decode_video's

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


def worker_context() -> ForkServerContext | SpawnContext:
    """``forkserver`` where the platform has it, else ``spawn``; never plain ``fork`` (torch's threads)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([*FORKSERVER_PRELOAD])
        return context
    return multiprocessing.get_context("spawn")


def default_workers() -> int:
    """One decoding process per core: the encoder's process waits on them most of the time."""
    return max(1, min(16, os.cpu_count() or 1))


def decode_threads(workers: int) -> int:
    """Decoding threads per worker: the cores shared out. Long files are split into segments that several
    workers decode at once (``DecodeSpec.segment_clips``), so a worker seldom decodes alone for long."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def start_worker_context() -> None:
    """Start the fork server now (it imports the decoding modules, a few seconds) so that it is ready when
    the first worker is needed: called before the encoder loads, the two overlap."""
    context = worker_context()
    if isinstance(context, ForkServerContext):
        from multiprocessing import forkserver

        forkserver.ensure_running()


@dataclass
class Task(Generic[Owner]):
    """A file to decode, and what the caller wants back with its events."""

    path: str
    known_hash: str | None
    owner: Owner
    segment: Segment | None = None  # clips of a long file left by the task that probed it
    crashes: int = 0  # times a worker died while decoding it


@dataclass
class Message(Generic[Owner]):
    """What the pool tells the caller about a task.

    ``event``: a decoding event; ``retry``: a worker died, the task runs again from the start (its clips
    come again, the same); ``restart``: another decoder takes the file over (void its clips so far);
    ``failed``: it cannot be decoded (``error`` says why); ``done``: no more events.
    """

    owner: Owner
    kind: Literal["event", "retry", "restart", "failed", "done"]
    event: Event | None = None
    error: str | None = None


def _serve(connection: Connection, spec: DecodeSpec, decode: DecodeFn) -> None:
    """A worker process: decode the files it is sent, streaming each one's events back."""
    init_worker()
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        ticket, path, known_hash, segment = request
        try:
            for event in decode(path, known_hash, spec, segment):
                connection.send((ticket, event))
        except Exception as exc:  # a bug, not a bad file: report it as this file's failure
            connection.send((ticket, DecodeFailed(describe_error(exc))))
        connection.send((ticket, None))


@dataclass
class _Worker:
    process: BaseProcess
    connection: Connection
    task: Any = None  # the Task it decodes, or None when idle
    ticket: int = 0  # names the current task's messages


@dataclass
class _Inline(Generic[Owner]):
    """``workers=0``: tasks decoded in this process, one event per poll."""

    spec: DecodeSpec
    running: deque[tuple[Task[Owner], Iterator[Event]]] = field(default_factory=deque)


class WorkerPool(Generic[Owner]):
    """``workers`` decoding processes (0: decode in this process), each decoding one task at a time.

    ``has_work()`` says whether the caller still has tasks to submit (to tell a dying machine from a few
    bad files). ``decode`` is what workers run for a file (a top-level function, sent to them by name).
    """

    def __init__(
        self,
        workers: int,
        spec: DecodeSpec,
        *,
        has_work: Callable[[], bool] = lambda: False,
        decode: DecodeFn = decode_video,
    ) -> None:
        self.spec, self.decode = spec, decode
        self._has_work = has_work
        self._context = worker_context() if workers > 0 else None
        self._workers: list[_Worker] = [self._start_worker() for _ in range(workers)]
        self._inline: _Inline[Owner] | None = _Inline(spec) if workers <= 0 else None
        self._retries: deque[Task[Owner]] = deque()  # tasks whose worker died
        self._doomed: list[Task[Owner]] = []  # killed a worker twice; failed once a worker proves healthy
        self._finished = 0  # tasks a worker completed
        self._tickets = 0

    # --- submitting -----------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether any task is being decoded."""
        if self._inline is not None:
            return bool(self._inline.running)
        return any(w.task is not None for w in self._workers)

    @property
    def has_retries(self) -> bool:
        return bool(self._retries)

    def fill(self, next_task: Callable[[], Task[Owner] | None]) -> None:
        """Give every idle worker a task: a retry first, else ``next_task()``."""
        if self._inline is not None:
            while not self._inline.running:
                task = self._retries.popleft() if self._retries else next_task()
                if task is None:
                    return
                self._inline.running.append((task, self.decode(task.path, task.known_hash, self.spec, task.segment)))
            return
        for index, worker in enumerate(self._workers):
            if worker.task is not None:
                continue
            if not worker.process.is_alive():  # died between tasks: replace it quietly
                worker.connection.close()
                worker = self._workers[index] = self._start_worker()
            task = self._retries.popleft() if self._retries else next_task()
            if task is None:
                return
            self._tickets += 1
            worker.task, worker.ticket = task, self._tickets
            with contextlib.suppress(BrokenPipeError, OSError):  # a dead worker is found by poll()
                worker.connection.send((worker.ticket, task.path, task.known_hash, task.segment))

    # --- receiving ------------------------------------------------------------------------------------------

    def poll(self, timeout: float | None) -> list[Message[Owner]]:
        """Messages that arrive within ``timeout`` seconds (None: wait for at least one)."""
        if self._inline is not None:
            return self._poll_inline()
        busy = [w for w in self._workers if w.task is not None]
        if not busy:
            return []
        ready = wait([w.connection for w in busy] + [w.process.sentinel for w in busy], timeout)
        messages: list[Message[Owner]] = []
        for worker in busy:
            if worker.connection in ready:
                messages += self._receive(worker)
            elif worker.process.sentinel in ready:
                messages += self._died(worker)
        return messages + self._give_up_on_doomed()

    def _receive(self, worker: _Worker) -> list[Message[Owner]]:
        task = worker.task
        assert task is not None
        try:
            ticket, event = worker.connection.recv()
        except Exception:  # EOF, or a message cut off by the worker's death
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            return self._died(worker)
        if ticket != worker.ticket:  # left over from a task this worker was sent before
            return []
        if event is None:
            worker.task = None
            self._finished += 1
            return [Message(task.owner, "done")]
        return [Message(task.owner, "event", event)]

    def _died(self, worker: _Worker) -> list[Message[Owner]]:
        task = worker.task
        assert task is not None
        code = worker.process.exitcode
        log.warning("a decoding worker died (exit code %s) while reading %s", code, task.path)
        worker.connection.close()
        self._workers[self._workers.index(worker)] = self._start_worker()
        task.crashes += 1
        if task.crashes >= 2:
            self._doomed.append(task)
            return []
        self._retries.append(task)
        return [Message(task.owner, "retry")]

    def _give_up_on_doomed(self) -> list[Message[Owner]]:
        if not self._doomed:
            return []
        if self._finished > 0:
            doomed, self._doomed = self._doomed, []
            return [Message(task.owner, "failed", error=CRASH_MESSAGE) for task in doomed]
        if len(self._doomed) >= 3 or not (self.busy or self._retries or self._has_work()):
            raise IndexerError(
                "the decoding worker processes die before finishing any file (see the log above); "
                "run with --workers 0 to decode in the main process"
            )
        return []

    def _poll_inline(self) -> list[Message[Owner]]:
        assert self._inline is not None
        if not self._inline.running:
            return []
        task, events = self._inline.running[0]
        event = next(events, None)
        if event is None:
            self._inline.running.popleft()
            self._finished += 1
            return [Message(task.owner, "done")]
        return [Message(task.owner, "event", event)]

    # --- life cycle -----------------------------------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        assert self._context is not None
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(theirs, self.spec, self.decode), daemon=True, name="tvr-decode"
        )
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def close(self) -> None:
        for worker in self._workers:
            if worker.task is None:
                with contextlib.suppress(BrokenPipeError, OSError):
                    worker.connection.send(None)
            worker.connection.close()
            if worker.task is not None:  # mid-file: no reason to wait for it
                worker.process.terminate()
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
        self._workers = []
