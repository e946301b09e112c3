"""Ingestion: plan (skip unchanged files) -> decode in worker processes -> encode in batches -> commit each
video in one transaction -> publish the index.

The main process runs the encoder and the catalog writes; ``--workers`` processes hash, probe and
decode files (``indexer.decode``). Up to ``max_inflight`` decode tasks run ahead of the encoder, so while a
batch is encoded the workers keep decoding the next ones; a long video is decoded in chunks of clips so
memory stays bounded. A worker that dies (a decoder crash) takes only its own file down: the tasks it
shared the pool with are retried one at a time, and a task that kills a worker twice marks its file failed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import select
from tqdm import tqdm

from . import records, store
from .catalog import IngestionRun, RunStatus, Video, VideoStatus, utcnow
from .clips import ClipPolicy
from .db import make_sessionmaker, open_catalog, read_snapshot, session_scope
from .decode import DecodedClip, DecodeSpec, Probed, decode_clips, describe_error, init_worker, prepare_video
from .errors import CheckpointMismatchError, IndexerError
from .settings import Settings
from .sources import Discovery, Source
from .store import IndexMeta
from .sync import indexed_checkpoints, sync_index

log = logging.getLogger(__name__)

PATH_QUERY_CHUNK = 500
# Imported once by the fork server, so that each decoding worker starts in a moment (missing ones are skipped).
# A worker re-runs the main script's imports (the ``tvr`` command: tvr_cli and what it registers), so those
# are here too; "__main__" itself is ignored by Python before 3.13 (the fork server is not told its path).
FORKSERVER_PRELOAD = (
    "__main__",
    "tvr_cli",
    "indexer.pipeline",
    "indexer.decode",
    "model.video",
    "model.preprocess",
    "decord",
    "av",
    "PIL.Image",
)


def check_device(device: str) -> None:
    """Fail early with a clear message when ``device`` cannot be used."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise IndexerError(f"--device {device}: CUDA is not available here (use --device cpu)")
    elif device != "cpu":
        raise IndexerError(f"--device {device!r}: expected cpu or cuda")


def worker_context():  # type: ignore[no-untyped-def]
    """``forkserver`` where the platform has it, else ``spawn``; never plain ``fork`` (torch's threads).

    The fork server imports the decoding modules (torch, the video reader) once; each worker forked from
    it starts in a moment instead of importing them again, which matters when a crashed pool is replaced.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = get_context("forkserver")
        context.set_forkserver_preload([*FORKSERVER_PRELOAD])
        return context
    return get_context("spawn")


def default_workers() -> int:
    """One decoding process per core, leaving one core to the encoder and the catalog writes."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


@dataclass
class IngestOptions:
    batch_size: int = 32  # clips per encoder call
    workers: int = field(default_factory=default_workers)  # decoding processes; 0 decodes in this process
    policy: ClipPolicy = field(default_factory=ClipPolicy)
    chunk_clips: int = 16  # clips per decoding task
    thumbnail_width: int = 160
    factory: str | None = None  # FAISS index_factory string; None chooses by collection size
    publish: bool = True  # publish the index at the end (sharded ingesters leave it to `tvr index rebuild`)
    switch_checkpoint: bool = False  # re-encode videos of another checkpoint instead of refusing
    progress: bool | None = None  # a progress bar; None: only on a terminal
    max_inflight: int | None = None  # decoding tasks ahead of the encoder; None: 2 per worker + 2


@dataclass
class IngestSummary:
    run_id: int
    discovered: int
    ignored: int
    indexed: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    clips: int = 0
    seconds: float = 0.0
    index: IndexMeta | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)  # waiting for decoding, encoding, commits


@dataclass
class _Job:
    """One video on its way through the pipeline."""

    source: Source
    known_hash: str | None  # the catalog's hash when the row is indexed with this checkpoint
    probed: Probed | None = None
    embeddings: np.ndarray | None = None
    thumbnails: list[bytes] = field(default_factory=list)
    remaining: int = 0  # clips not yet encoded
    done: bool = False


@dataclass
class _Task:
    kind: Literal["prepare", "decode"]
    job: _Job
    windows: list[tuple[int, tuple[float, float]]] = field(default_factory=list)
    crashes: int = 0  # times a worker died while running it


class _InlineExecutor:
    """Runs tasks in this process at submit time (``--workers 0``: debugging, profiling)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def ingest(
    settings: Settings,
    discovery: Discovery,
    options: IngestOptions | None = None,
    *,
    encoder: Any = None,
    args: dict[str, Any] | None = None,
) -> IngestSummary:
    """Index ``discovery.sources`` into the catalog of ``settings`` and publish the index.

    ``encoder`` defaults to ``load_encoder(settings.checkpoint, settings.device)``; ``args`` is recorded
    with the run. Files that cannot be read are recorded as failed; they never stop the run.
    """
    options = options or IngestOptions()
    if encoder is None:
        from model import load_encoder

        encoder = load_encoder(settings.checkpoint, device=settings.device)
    writer = open_catalog(settings, writer=True)
    reader = open_catalog(settings, auto_upgrade=False)
    try:
        return _Ingestion(settings, options, encoder, writer, reader).run(discovery, args or {})
    finally:
        writer.dispose()
        reader.dispose()


class _Ingestion:
    def __init__(self, settings: Settings, options: IngestOptions, encoder: Any, writer: Any, reader: Any) -> None:
        self.settings, self.options, self.encoder = settings, options, encoder
        self.writes = make_sessionmaker(writer)
        self.reads = make_sessionmaker(reader)
        self.checkpoint_id: str = encoder.checkpoint_id
        self.spec = DecodeSpec(
            num_frames=encoder.num_frames,
            image_size=encoder.image_size,
            policy=options.policy,
            chunk_clips=options.chunk_clips,
            thumbnail_width=options.thumbnail_width,
        )
        self.thumbnails_dir = settings.thumbnails_dir
        self.max_inflight = options.max_inflight or 2 * max(1, options.workers) + 2
        self.max_buffer = 2 * options.batch_size + options.chunk_clips
        self.new_tasks: deque[_Task] = deque()  # prepare tasks of videos not started
        self.chunk_tasks: deque[_Task] = deque()  # later chunks of started videos (run first)
        self.retry_tasks: deque[_Task] = deque()  # tasks that were in the pool when a worker died
        self.inflight: dict[Future, _Task] = {}
        self.isolating = False  # a retried task runs alone
        self.worker_results = 0  # tasks the workers finished
        self.doomed: list[_Task] = []  # tasks that killed a worker twice, failed once a worker proves healthy
        self.buffer: list[tuple[_Job, DecodedClip]] = []
        self.timers = {"wait_decode": 0.0, "encode": 0.0, "commit": 0.0}
        self.bar: tqdm | None = None

    # --- the run ----------------------------------------------------------------------------------------

    def run(self, discovery: Discovery, args: dict[str, Any]) -> IngestSummary:
        started = time.perf_counter()
        sources = self._check_checkpoint(list(discovery.sources))
        summary = IngestSummary(run_id=0, discovered=len(sources), ignored=len(discovery.ignored))
        self.summary = summary
        run_id = self._start_run(summary, args)
        summary.run_id = run_id
        jobs = self._plan(sources, summary)
        self.new_tasks.extend(_Task("prepare", job) for job in jobs)
        log.info(
            "ingest run %d: %d videos (%d unchanged, %d to do), %d other files ignored, checkpoint %s",
            run_id,
            len(sources),
            summary.skipped,
            len(jobs),
            summary.ignored,
            self.checkpoint_id,
        )
        status = RunStatus.failed
        self.bar = tqdm(
            total=len(sources),
            initial=summary.skipped,
            unit="video",
            disable=not self.options.progress if self.options.progress is not None else None,
            dynamic_ncols=True,
        )
        try:
            self._loop()
            self.bar.close()
            if self.options.publish:
                summary.index = sync_index(
                    self.reads,
                    self.settings.index_dir,
                    factory=self.options.factory,
                    use_gpu=str(self.settings.device).startswith("cuda"),
                )
            status = RunStatus.finished
        finally:
            self.bar.close()
            summary.seconds = time.perf_counter() - started
            summary.stage_seconds = dict(self.timers)
            self._finish_run(run_id, summary, status)
        return summary

    def _check_checkpoint(self, sources: list[Source]) -> list[Source]:
        """Refuse to mix checkpoints; with ``switch_checkpoint``, queue every video of another one."""
        current = store.current_meta(self.settings.index_dir)
        with read_snapshot(self.reads) as session:
            others = {c: n for c, n in indexed_checkpoints(session).items() if c != self.checkpoint_id}
            stale_index = (
                current is not None and current.vector_count > 0 and current.checkpoint_id != self.checkpoint_id
            )
            if not (others or stale_index):
                return sources
            if not self.options.switch_checkpoint:
                found = []
                if stale_index:
                    found.append(f"index v{current.version:06d} was built with checkpoint {current.checkpoint_id}")  # type: ignore[union-attr]
                found += [f"{n} indexed videos were encoded with checkpoint {c}" for c, n in sorted(others.items())]
                raise CheckpointMismatchError(
                    f"this run encodes with checkpoint {self.checkpoint_id} ({self.settings.checkpoint}), but "
                    f"{' and '.join(found)}; vectors of two checkpoints cannot share an index. Use that "
                    "--checkpoint, or re-encode everything with this one: `tvr ingest --switch-checkpoint PATH...`"
                )
            rows = session.execute(
                select(Video.path).where(Video.status == VideoStatus.indexed, Video.checkpoint_id != self.checkpoint_id)
            ).all()
        known = {str(s.path) for s in sources}
        extra = [Source(path=Path(p)) for (p,) in rows if p not in known]
        log.info("switching checkpoint: %d catalog videos of other checkpoints are re-encoded too", len(extra))
        return sources + extra

    def _plan(self, sources: list[Source], summary: IngestSummary) -> list[_Job]:
        """Jobs for the sources that are new, changed, failed before, or of another checkpoint."""
        rows: dict[str, Any] = {}
        paths = [str(s.path) for s in sources]
        with read_snapshot(self.reads) as session:
            for begin in range(0, len(paths), PATH_QUERY_CHUNK):
                chunk = paths[begin : begin + PATH_QUERY_CHUNK]
                for row in session.execute(
                    select(
                        Video.id,
                        Video.path,
                        Video.status,
                        Video.checkpoint_id,
                        Video.content_hash,
                        Video.size,
                        Video.mtime_ns,
                        Video.title,
                        Video.meta,
                    ).where(Video.path.in_(chunk))
                ):
                    rows[row.path] = row
        jobs: list[_Job] = []
        descriptions: list[tuple[int, str | None, dict[str, Any]]] = []
        for source in sources:
            row = rows.get(str(source.path))
            current = row is not None and row.status == VideoStatus.indexed and row.checkpoint_id == self.checkpoint_id
            try:
                stat = os.stat(source.path)
            except OSError:
                stat = None
            if current and stat is not None and (row.size, row.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                summary.skipped += 1
                new_title = source.title is not None and source.title != row.title
                new_meta = bool(source.metadata) and {**(row.meta or {}), **source.metadata} != (row.meta or {})
                if new_title or new_meta:
                    descriptions.append((row.id, source.title, source.metadata))
                continue
            jobs.append(_Job(source, known_hash=row.content_hash if current else None))
        records.update_descriptions(self.writes, descriptions)
        return jobs

    def _start_run(self, summary: IngestSummary, args: dict[str, Any]) -> int:
        host = socket.gethostname()
        with session_scope(self.writes) as session:
            for stale in session.scalars(
                select(IngestionRun).where(IngestionRun.status == RunStatus.running, IngestionRun.host == host)
            ):
                if stale.pid is not None and not _process_alive(stale.pid):
                    stale.status = RunStatus.interrupted
                    log.warning("ingest run %d (pid %d) was interrupted: marked as such", stale.id, stale.pid)
            run = IngestionRun(
                host=host,
                pid=os.getpid(),
                checkpoint_id=self.checkpoint_id,
                args=args,
                discovered=summary.discovered,
                ignored=summary.ignored,
                status=RunStatus.running,
                indexed=0,
                skipped=0,
                failed=0,
                clips=0,
            )
            session.add(run)
            session.flush()
            return run.id

    def _finish_run(self, run_id: int, summary: IngestSummary, status: RunStatus) -> None:
        try:
            with session_scope(self.writes) as session:
                run = session.get(IngestionRun, run_id)
                if run is not None:
                    run.finished_at, run.status = utcnow(), status
                    run.indexed, run.skipped, run.failed = summary.indexed, summary.skipped, len(summary.failed)
                    run.clips = summary.clips
        except Exception:  # do not hide the error that ended the run
            log.exception("could not record the end of ingest run %d", run_id)

    # --- the event loop -----------------------------------------------------------------------------------

    def _loop(self) -> None:
        executor = self._new_executor()
        try:
            while True:
                self._fill(executor)
                if len(self.buffer) >= self.options.batch_size:
                    self._encode(self.options.batch_size)
                    done = {f for f in self.inflight if f.done()}
                    executor = self._collect(done, executor)
                    continue
                if not self.inflight:
                    if self.buffer:
                        self._encode(len(self.buffer))
                        continue
                    if self._has_tasks():
                        continue
                    break
                waited = time.perf_counter()
                done, _ = wait(self.inflight, timeout=0.2 if self.buffer else None, return_when=FIRST_COMPLETED)
                self.timers["wait_decode"] += time.perf_counter() - waited
                if not done and self.buffer:
                    self._encode(len(self.buffer))  # the workers are slower than the encoder: do not wait
                executor = self._collect(done, executor)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    def _new_executor(self) -> ProcessPoolExecutor | _InlineExecutor:
        if self.options.workers <= 0:
            return _InlineExecutor()
        return ProcessPoolExecutor(self.options.workers, mp_context=worker_context(), initializer=init_worker)

    def _has_tasks(self) -> bool:
        return bool(self.retry_tasks or self.chunk_tasks or self.new_tasks)

    def _fill(self, executor: ProcessPoolExecutor | _InlineExecutor) -> None:
        while len(self.inflight) < self.max_inflight and len(self.buffer) < self.max_buffer and not self.isolating:
            if self.retry_tasks:
                if self.inflight:
                    return  # a task that was in the pool when a worker died runs alone
                task = self.retry_tasks.popleft()
                self.isolating = True
            elif self.chunk_tasks:
                task = self.chunk_tasks.popleft()
            elif self.new_tasks:
                task = self.new_tasks.popleft()
            else:
                return
            if task.job.done:
                self.isolating = False
                continue
            path = str(task.job.source.path)
            if task.kind == "prepare":
                future = executor.submit(prepare_video, path, task.job.known_hash, self.spec)
            else:
                future = executor.submit(decode_clips, path, task.windows, self.spec)
            self.inflight[future] = task

    def _collect(self, done: set[Future], executor: Any) -> Any:
        crashed: list[_Task] = []
        for future in [f for f in self.inflight if f in done]:  # in submission order
            task = self.inflight.pop(future)
            if task.crashes:
                self.isolating = False
            try:
                result = future.result()
            except BrokenProcessPool:
                crashed.append(task)
                continue
            except Exception as exc:
                self.worker_results += 1
                self._fail(task.job, describe_error(exc))
                continue
            self.worker_results += 1
            if task.kind == "prepare":
                self._prepared(task.job, result)
            elif not task.job.done:
                self.buffer += [(task.job, clip) for clip in result]
        if crashed:
            crashed += list(self.inflight.values())  # the whole pool is gone
            self.inflight.clear()
            self.isolating = False
            executor.shutdown(wait=False, cancel_futures=True)
            executor = self._new_executor()
            for task in crashed:
                task.crashes += 1
                (self.doomed if task.crashes >= 2 else self.retry_tasks).append(task)
            log.warning("a decoding worker died; %d tasks are retried one at a time", len(self.retry_tasks))
        if self.doomed and self.worker_results > 0:
            for task in self.doomed:
                self._fail(task.job, "the decoder crashed (its worker process died) while reading this file")
            self.doomed = []
        elif self.doomed and (len(self.doomed) >= 3 or not (self.inflight or self._has_tasks())):
            raise IndexerError(
                "the decoding worker processes die before finishing any task (see the log above); "
                "run with --workers 0 to decode in the main process"
            )
        return executor

    def _prepared(self, job: _Job, probed: Probed) -> None:
        job.probed = probed
        if job.done:
            return
        if probed.status == "failed":
            self._fail(job, probed.error or "unknown error")
            return
        if probed.status == "unchanged":
            self._timed_commit(records.record_unchanged, self.writes, probed)
            self._finish(job, "skipped")
            return
        count = len(probed.windows)
        job.embeddings = np.zeros((count, self.encoder.embed_dim), np.float32)
        job.thumbnails = [b""] * count
        job.remaining = count
        self.buffer += [(job, clip) for clip in probed.first_chunk]
        probed.first_chunk = []
        step = self.spec.chunk_clips
        positions = list(enumerate(probed.windows))
        for begin in range(step, count, step):
            self.chunk_tasks.append(_Task("decode", job, positions[begin : begin + step]))

    # --- encoding and committing ------------------------------------------------------------------------------

    def _encode(self, count: int) -> None:
        import torch

        batch, self.buffer = self.buffer[:count], self.buffer[count:]
        batch = [(job, clip) for job, clip in batch if not job.done]
        if not batch:
            return
        started = time.perf_counter()
        from model.preprocess import normalize_frames

        frames = torch.from_numpy(np.stack([clip.frames for _, clip in batch]))  # uint8
        frames = normalize_frames(frames.to(getattr(self.encoder, "device", "cpu")))  # on the encoder's device
        vectors = self.encoder.encode_video(frames).float().cpu().numpy()
        self.timers["encode"] += time.perf_counter() - started
        for (job, clip), vector in zip(batch, vectors, strict=True):
            assert job.embeddings is not None
            job.embeddings[clip.position] = vector
            job.thumbnails[clip.position] = clip.thumbnail
            job.remaining -= 1
            if job.remaining == 0:
                self._commit(job)

    def _commit(self, job: _Job) -> None:
        assert job.probed is not None and job.embeddings is not None
        item = records.EncodedVideo(
            probed=job.probed,
            title=job.source.title,
            metadata=job.source.metadata,
            embeddings=job.embeddings,
            thumbnails=job.thumbnails,
            checkpoint_id=self.checkpoint_id,
        )
        outcome = self._timed_commit(records.record_indexed, self.writes, self.thumbnails_dir, item)
        if outcome == "indexed":
            self.summary.clips += len(job.probed.windows)
        self._finish(job, "indexed" if outcome == "indexed" else "skipped")

    def _fail(self, job: _Job, reason: str) -> None:
        if job.done:
            return
        log.debug("%s: failed: %s", job.source.path, reason)
        self._timed_commit(
            records.record_failed,
            self.writes,
            self.thumbnails_dir,
            str(job.source.path),
            reason,
            job.probed if job.probed is not None and job.probed.content_hash else None,
            job.source.title,
            job.source.metadata,
        )
        self.summary.failed.append((str(job.source.path), reason))
        self._finish(job, "failed")

    def _timed_commit(self, fn: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.timers["commit"] += time.perf_counter() - started

    def _finish(self, job: _Job, outcome: Literal["indexed", "skipped", "failed"]) -> None:
        job.done = True
        job.embeddings, job.thumbnails = None, []
        if outcome == "indexed":
            self.summary.indexed += 1
        elif outcome == "skipped":
            self.summary.skipped += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(clips=self.summary.clips, failed=len(self.summary.failed), refresh=False)


def _process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a reused pid counts as alive: never a false mark)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
