"""Ingestion: plan (skip unchanged files) -> decode in worker processes -> encode in batches -> commit each
video in one transaction -> publish the index.

The stages have one owner each, so a cluster runner can reuse them: ``planning`` decides what to do,
``decode`` (in the ``workers`` pool) hashes, probes and decodes files, ``encode`` turns clips into vectors,
``records`` writes the catalog, ``runs`` keeps the run's record and ``sync`` publishes the index. This module
is the local loop that drives them: each worker decodes one file at a time and streams its clips in chunks,
so while a batch is encoded the workers decode the next ones; the loop reads from them only while it has
room for more clips, so memory stays bounded however long the videos.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tqdm import tqdm

from model.video_pyav import DecodeSteps

from . import nvdec, planning, ray_runner, records
from .catalog import RunStatus
from .clips import ClipPolicy
from .db import make_sessionmaker, open_catalog
from .decode import TIMING_KEYS, DecodedChunk, DecodedClip, DecodeFailed, DecodeSpec, Probed, Segment, decode_video
from .encode import cores_restored, encode_clips, share_cores
from .ray_runner import RayOptions
from .runs import RunCounts, finish_run, start_run
from .settings import Settings
from .sources import Discovery, Source
from .store import IndexMeta
from .sync import sync_index
from .workers import Message, Task, WorkerPool, decode_threads, default_workers, start_worker_context

if TYPE_CHECKING:
    from model.protocols import VideoTextEncoder

log = logging.getLogger(__name__)


@dataclass
class IngestOptions:
    batch_size: int = 32  # clips per encoder call
    workers: int = field(default_factory=default_workers)  # decoding processes; 0 decodes in this process
    backend: str | None = None  # video reader: None (PyAV) or "decord"
    decode_steps: DecodeSteps = field(default_factory=DecodeSteps)  # PyAV's savings (benchmarks switch them off)
    scale_in_decoder: bool = True  # scale frames in libswscale (else whole RGB frames resized by torch)
    policy: ClipPolicy = field(default_factory=ClipPolicy)
    chunk_clips: int = 16  # clips per message from a decoding worker
    segment_clips: int = 48  # longer files are split into segments of this many clips, decoded in parallel
    thumbnail_width: int = 160
    factory: str | None = None  # FAISS index_factory string; None chooses by collection size
    publish: bool = True  # publish the index at the end (sharded ingesters leave it to `tvr index rebuild`)
    switch_checkpoint: bool = False  # re-encode videos of another checkpoint instead of refusing
    progress: bool | None = None  # a progress bar; None: only on a terminal
    decoder: str = (
        "auto"  # "cpu": worker processes (Ray tasks); "nvdec": NVDEC where the encoder is; "auto": nvdec if it can
    )
    nvdec_sessions: int = 4  # files NVDEC decodes at once (threads)
    gpu_decode: nvdec.GpuDecodeFn | None = None  # the NVDEC pool's decode function (tests stand a fake in)
    ray: RayOptions | None = None  # decode and encode on a Ray cluster (ray_runner.py) instead of this machine


@dataclass
class IngestSummary:
    run_id: int
    discovered: int
    ignored: int
    indexed: int = 0
    skipped: int = 0
    moved: int = 0  # unchanged videos moved to another collection (counted in ``skipped`` too)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    clips: int = 0
    video_seconds: float = 0.0  # duration of the videos indexed
    seconds: float = 0.0
    index: IndexMeta | None = None
    # seconds per step: the decoders' (summed over workers: hash, open, demux, decode, convert, thumbnails)
    # and this process's (waiting for decoded clips, encoding, catalog commits)
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class _Job:
    """One video on its way through the pipeline."""

    source: Source
    known_hash: str | None  # the catalog's hash when the row is indexed with this checkpoint
    probed: Probed | None = None
    embeddings: np.ndarray | None = None
    thumbnails: list[bytes] = field(default_factory=list)
    encoded: np.ndarray | None = None  # bool per clip: a clip decoded twice (a retried task) counts once
    attempt: int = 0  # bumped when another decoder takes the file over: clips of earlier attempts are void
    done: bool = False


def ingest(
    settings: Settings,
    discovery: Discovery,
    options: IngestOptions | None = None,
    *,
    encoder: VideoTextEncoder | None = None,
    args: dict[str, Any] | None = None,
) -> IngestSummary:
    """Index ``discovery.sources`` into the catalog of ``settings`` and publish the index.

    ``encoder`` defaults to ``load_encoder(settings.checkpoint, settings.device)``; ``args`` is recorded
    with the run. Files that cannot be read are recorded as failed; they never stop the run.
    """
    options = options or IngestOptions()
    with contextlib.ExitStack() as stack:
        cluster = None
        if options.ray is not None:  # joining or starting Ray overlaps the encoder's loading
            with ThreadPoolExecutor(1) as loader:
                loading = loader.submit(_load_encoder, settings) if encoder is None else None
                cluster = stack.enter_context(ray_runner.connected(options.ray))
                encoder = loading.result() if loading is not None else encoder
        elif options.workers > 0:
            start_worker_context()  # the decoders' imports overlap the encoder's loading
        if encoder is None:
            encoder = _load_encoder(settings)
        writer = open_catalog(settings, writer=True)
        stack.callback(writer.dispose)
        reader = open_catalog(settings, auto_upgrade=False)
        stack.callback(reader.dispose)
        return _Ingestion(settings, options, encoder, writer, reader, cluster).run(discovery, args or {})


def _load_encoder(settings: Settings) -> VideoTextEncoder:
    from model import load_encoder

    return load_encoder(settings.checkpoint, device=settings.device)


class _Ingestion:
    def __init__(
        self,
        settings: Settings,
        options: IngestOptions,
        encoder: VideoTextEncoder,
        writer: Any,
        reader: Any,
        cluster: ray_runner.Cluster | None = None,
    ) -> None:
        self.settings, self.options, self.encoder, self.cluster = settings, options, encoder, cluster
        self.writes = make_sessionmaker(writer)
        self.reads = make_sessionmaker(reader)
        self.checkpoint_id = encoder.checkpoint_id
        # on Ray, the cluster's encoder actors choose (ray_runner); here, this process's encoder
        self.decoder = (
            None
            if options.ray
            else nvdec.choose_decoder(options.decoder, encoder.device, injected=options.gpu_decode is not None)
        )
        self.spec = DecodeSpec(
            num_frames=encoder.num_frames,
            preprocess=encoder.preprocess,
            policy=options.policy,
            chunk_clips=options.chunk_clips,
            thumbnail_width=options.thumbnail_width,
            backend=options.backend,
            threads=decode_threads(options.workers),
            steps=options.decode_steps,
            scale_in_decoder=options.scale_in_decoder,
            segment_clips=0 if self.decoder == "nvdec" else options.segment_clips,  # NVDEC decodes files whole
        )
        self.max_buffer = 2 * options.batch_size + options.chunk_clips
        self.waiting: deque[_Job] = deque()  # videos not started, largest first
        self.segments: deque[tuple[_Job, Segment]] = deque()  # later clips of long videos, before new videos
        self.buffer: list[tuple[_Job, int, DecodedClip]] = []  # (job, its attempt, clip)
        self.timers = dict.fromkeys(TIMING_KEYS, 0.0) | {"wait_decode": 0.0, "encode": 0.0, "commit": 0.0}
        self.bar: tqdm[Any] | None = None
        self.summary = IngestSummary(run_id=0, discovered=0, ignored=0)

    # --- the run ----------------------------------------------------------------------------------------

    def run(self, discovery: Discovery, args: dict[str, Any]) -> IngestSummary:
        started = time.perf_counter()
        sources = planning.with_checkpoint_switch(
            self.reads,
            self.settings.index_dir,
            discovery.sources,
            self.checkpoint_id,
            superseded=self.encoder.legacy_checkpoint_ids,
            switch=self.options.switch_checkpoint,
            name=self.settings.checkpoint,
        )
        summary = self.summary = IngestSummary(run_id=0, discovered=len(sources), ignored=len(discovery.ignored))
        summary.run_id = start_run(
            self.writes, checkpoint_id=self.checkpoint_id, args=args, discovered=len(sources), ignored=summary.ignored
        )
        plan = planning.plan(self.reads, sources, self.checkpoint_id)
        summary.moved = records.update_descriptions(self.writes, plan.descriptions)
        summary.skipped = plan.unchanged
        self.waiting.extend(_Job(source, known_hash) for source, known_hash in plan.todo)
        log.info(
            "ingest run %d: %d videos (%d unchanged, %d to do), %d other files ignored, checkpoint %s",
            summary.run_id,
            len(sources),
            plan.unchanged,
            len(plan.todo),
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
            if self.options.ray is not None and self.cluster is not None:
                ray_runner.run(self, self.options.ray, self.cluster)
            else:
                with cores_restored(self.encoder.device):
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
            counts = RunCounts(summary.indexed, summary.skipped, len(summary.failed), summary.clips)
            finish_run(self.writes, summary.run_id, status, counts)
        return summary

    # --- the event loop -----------------------------------------------------------------------------------

    def _loop(self) -> None:
        batch_size = self.options.batch_size

        def cpu_pool() -> WorkerPool[_Job]:
            return WorkerPool(self.options.workers, self.spec, has_work=self.has_work, decode=decode_video)

        pool: WorkerPool[_Job] | nvdec.GpuPool[_Job]
        if self.decoder == "nvdec":  # files it gives up on go to a CPU pool, made when one does
            gpu_decode = self.options.gpu_decode or nvdec.decode_video_nvdec
            pool = nvdec.GpuPool(self.options.nvdec_sessions, self.spec, self.encoder.device, cpu_pool, gpu_decode)
        else:
            pool = cpu_pool()
        try:
            while True:
                pool.fill(self._next_task)
                if len(self.buffer) >= batch_size:
                    self._encode(batch_size)
                    continue
                if not pool.busy:
                    if self.buffer:
                        self._encode(len(self.buffer))
                        continue
                    if pool.has_retries or self.has_work():
                        continue
                    break
                waited = time.perf_counter()
                messages = pool.poll(0.2 if self.buffer else None)
                self.timers["wait_decode"] += time.perf_counter() - waited
                if not messages and self.buffer:
                    self._encode(len(self.buffer))  # the workers are slower than the encoder: do not wait
                for message in messages:
                    self._handle(message)
        finally:
            pool.close()

    def _next_task(self) -> Task[_Job] | None:
        if len(self.buffer) >= self.max_buffer:
            return None
        taken = self.take_task()
        if taken is None:
            return None
        job, segment = taken
        return Task(str(job.source.path), job.known_hash, job, segment)

    # --- what every executor calls (the local loop above, ray_runner) ---------------------------------------

    def has_work(self) -> bool:
        return bool(self.segments or self.waiting)

    def take_task(self) -> tuple[_Job, Segment | None] | None:
        """What to decode next: a started video's segment, else a new video (None: nothing is left)."""
        while self.segments:
            job, segment = self.segments.popleft()
            if not job.done:
                return job, segment
        return (self.waiting.popleft(), None) if self.waiting else None

    def add_timings(self, timings: dict[str, float]) -> None:
        for key, seconds in timings.items():
            self.timers[key] = self.timers.get(key, 0.0) + seconds

    def _handle(self, message: Message[_Job]) -> None:
        job = message.owner
        if message.kind == "retry":  # its worker died: the task runs again; the clips that came stay valid
            log.debug("%s: decoding again on a fresh worker", job.source.path)
        elif message.kind == "restart":
            self.void(job)
        elif message.kind == "failed":
            self.fail(job, message.error or "unknown error")
        elif message.kind == "event":
            event = message.event
            self.add_timings(getattr(event, "timings", {}))
            if isinstance(event, Probed):
                self.prepare(job, event)
            elif isinstance(event, DecodedChunk) and not job.done:
                self.buffer += [(job, job.attempt, clip) for clip in event.clips]
            elif isinstance(event, DecodeFailed):
                self.fail(job, event.error)

    def void(self, job: _Job) -> None:
        """Another decoder takes the file over (the CPU after NVDEC): its clips, a little different, replace
        everything that came so far."""
        job.attempt += 1
        job.probed = job.embeddings = job.encoded = None

    def prepare(self, job: _Job, probed: Probed) -> None:
        """A video's first event: record it as unchanged or failed, or make room for its clips."""
        if job.done or (job.probed is not None and job.probed.windows == probed.windows):
            return  # a retried decoding task probed it again
        job.probed = probed
        if probed.status == "failed":
            self.fail(job, probed.error or "unknown error")
            return
        if probed.status == "unchanged":
            source = job.source
            description = records.Description(source.title, source.metadata, source.collection)
            self.summary.moved += self._timed_commit(records.record_unchanged, self.writes, probed, description)
            self._finish(job, "skipped")
            return
        count = len(probed.windows)
        job.embeddings = np.zeros((count, self.encoder.embed_dim), np.float32)
        job.thumbnails = [b""] * count
        job.encoded = np.zeros(count, bool)
        self.segments.extend((job, segment) for segment in probed.segments)

    # --- encoding and committing ------------------------------------------------------------------------------

    def _encode(self, count: int) -> None:
        full = len(self.buffer) >= self.max_buffer  # then the loop stopped reading and the decoders wait
        share_cores(self.encoder.device, 0 if full else self.options.workers)
        taken, self.buffer = self.buffer[:count], self.buffer[count:]
        batch = [(job, clip) for job, attempt, clip in taken if not job.done and attempt == job.attempt]
        if not batch:
            return
        started = time.perf_counter()
        vectors = encode_clips(self.encoder, [clip for _, clip in batch])
        self.timers["encode"] += time.perf_counter() - started
        for (job, clip), vector in zip(batch, vectors, strict=True):
            self.store(job, clip.position, vector, clip.thumbnail)

    def store(self, job: _Job, position: int, vector: np.ndarray, thumbnail: bytes) -> None:
        """One clip's embedding and thumbnail; the video is committed once it has all of them."""
        if job.done or job.embeddings is None or job.encoded is None:
            return
        job.embeddings[position] = vector
        job.thumbnails[position] = thumbnail
        job.encoded[position] = True
        if job.encoded.all():
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
            collection=job.source.collection,
        )
        outcome = self._timed_commit(records.record_indexed, self.writes, item)
        if outcome == "indexed":
            self.summary.clips += len(job.probed.windows)
            self.summary.video_seconds += job.probed.duration
        self._finish(job, "indexed" if outcome == "indexed" else "skipped")

    def fail(self, job: _Job, reason: str) -> None:
        """Record the video as failed with ``reason``; the run goes on."""
        if job.done:
            return
        log.debug("%s: failed: %s", job.source.path, reason)
        self._timed_commit(
            records.record_failed,
            self.writes,
            str(job.source.path),
            reason,
            job.probed if job.probed is not None and job.probed.content_hash else None,
            job.source.title,
            job.source.metadata,
            job.source.collection,
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
        job.embeddings, job.thumbnails, job.encoded = None, [], None
        if outcome == "indexed":
            self.summary.indexed += 1
        elif outcome == "skipped":
            self.summary.skipped += 1
        if self.bar is not None:
            self.bar.update(1)
            hours = self.summary.video_seconds / 3600
            self.bar.set_postfix(
                clips=self.summary.clips, hours=f"{hours:.2f}", failed=len(self.summary.failed), refresh=False
            )
