"""Ingestion: plan (skip unchanged files) -> decode in worker processes -> encode in batches -> commit each
video in one transaction -> publish the index.

The stages have one owner each, so a cluster runner can reuse them: ``planning`` decides what to do,
``decode`` (in the ``workers`` pool) hashes, probes and decodes files, ``encode`` turns clips into vectors,
``records`` writes the catalog, ``runs`` keeps the run's record and ``sync`` publishes the index. This module
is the driver: it plans, keeps each video's clips until all are encoded, commits them and publishes; the
decoding and encoding run in ``local_runner`` (this machine) or ``ray_runner`` (a Ray cluster), which hand
their events and vectors back to it.

Subtitles: a video whose content is indexed anew has its embedded text streams read by a thread here while
it is decoded (``subtitles.read_embedded_tracks``), committed with its clips; after the videos, every
discovered video's subtitle files are brought up to date (``subtitle_store.sync_file_tracks``), unchanged and
skipped videos included.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from model.video_pyav import DecodeSteps

from . import local_runner, nvdec, planning, ray_runner, records, subtitle_store, subtitles
from .catalog import RunStatus
from .clips import ClipPolicy
from .db import make_sessionmaker, open_catalog
from .decode import TIMING_KEYS, DecodeSpec, Probed, Segment
from .progress import IngestSummary, Outcome, count_video, progress_bar
from .ray_runner import RayOptions
from .runs import RunCounts, finish_run, start_run
from .settings import Settings
from .sources import Discovery, Source
from .sync import sync_index
from .workers import decode_threads, default_workers, start_worker_context

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
    text_tracks: Future[list[subtitles.Track]] | None = None  # its embedded text streams, being read


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
        self.waiting: deque[_Job] = deque()  # videos not started, largest first
        self.segments: deque[tuple[_Job, Segment]] = deque()  # later clips of long videos, before new videos
        self.timers = dict.fromkeys(TIMING_KEYS, 0.0) | {
            "wait_decode": 0.0,
            "encode": 0.0,
            "commit": 0.0,
            "subtitles": 0.0,  # subtitle files synced, and waits for embedded streams still being read
        }
        self.text_reader = ThreadPoolExecutor(1, thread_name_prefix="tvr-subtitles")  # embedded streams
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
        self.bar = progress_bar(summary, self.options.progress)
        try:
            if self.options.ray is not None and self.cluster is not None:
                ray_runner.run(self, self.options.ray, self.cluster)
            else:
                local_runner.run(self)
            self.bar.close()
            self._sync_subtitle_files(sources)
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
            self.text_reader.shutdown(wait=False, cancel_futures=True)
            summary.seconds = time.perf_counter() - started
            summary.stage_seconds = dict(self.timers)
            counts = RunCounts(summary.indexed, summary.skipped, len(summary.failed), summary.clips)
            finish_run(self.writes, summary.run_id, status, counts)
        return summary

    def _sync_subtitle_files(self, sources: list[Source]) -> None:
        """Every discovered video's subtitle files into the catalog; a warning per failed track of the run."""
        started = time.perf_counter()
        subtitle_store.sync_file_tracks(self.reads, self.writes, sources, self.summary.subtitles)
        self.timers["subtitles"] += time.perf_counter() - started
        for _, error in self.summary.subtitles.failed:
            log.warning("subtitles not indexed: %s", error)  # the error names the file

    # --- what every executor calls (local_runner, ray_runner) ----------------------------------------------

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
        if job.text_tracks is None:  # read beside the decoding; not again when another decoder takes over
            job.text_tracks = self.text_reader.submit(subtitles.read_embedded_tracks, probed.path, probed.content_hash)
        count = len(probed.windows)
        job.embeddings = np.zeros((count, self.encoder.embed_dim), np.float32)
        job.thumbnails = [b""] * count
        job.encoded = np.zeros(count, bool)
        self.segments.extend((job, segment) for segment in probed.segments)

    # --- committing ---------------------------------------------------------------------------------------------

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
            text_tracks=self._embedded_tracks(job),
        )
        outcome = self._timed_commit(records.record_indexed, self.writes, item, self.summary.subtitles)
        if outcome == "indexed":
            self.summary.clips += len(job.probed.windows)
            self.summary.video_seconds += job.probed.duration
        self._finish(job, "indexed" if outcome == "indexed" else "skipped")

    def _embedded_tracks(self, job: _Job) -> list[subtitles.Track] | None:
        """The video's embedded subtitle tracks once read (None: not read, the stored ones stay)."""
        if job.text_tracks is None:
            return None
        started = time.perf_counter()
        try:
            return job.text_tracks.result()
        except Exception:  # read_embedded_tracks reports what it can as failed tracks: this is a bug
            log.exception("%s: reading its subtitle streams failed", job.source.path)
            return None
        finally:
            self.timers["subtitles"] += time.perf_counter() - started  # what the commit waited for

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

    def _finish(self, job: _Job, outcome: Outcome) -> None:
        job.done = True
        job.embeddings, job.thumbnails, job.encoded = None, [], None
        if job.text_tracks is not None:
            job.text_tracks.cancel()  # not read yet: no longer needed (a failed or unchanged video)
            job.text_tracks = None
        count_video(self.summary, self.bar, outcome)
