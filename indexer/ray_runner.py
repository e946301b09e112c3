"""Ingestion on a Ray cluster (``tvr ingest --ray``): the local pipeline's stages, placed by Ray.

The driver plans, writes the catalog and publishes the index exactly as a local run does
(``pipeline._Ingestion``); only decoding and encoding move to the cluster, to ``ray_remote``'s decoding
task and encoder actors. This module joins (or starts) the cluster and schedules them:

- each file, or segment of a long one, to a decoding task, and each chunk of clips it decodes to one of a
  pool of encoder actors, each holding a GPU where the cluster has them;
- or, where the decoder resolves to NVDEC (``nvdec.choose_decoder``, asked of an actor), each file to an
  actor's NVDEC sessions; a file NVDEC gives up on is voided (the local pipeline's "restart") and decoded
  by a CPU task as above.

Frames travel from a decoding task to an actor through Ray's object store, never through the driver: it
reads each chunk's ``ChunkNotice`` and hands the chunk itself to an actor unread. Only vectors and
thumbnails come back. Ray retries a decoding task or restarts an actor whose process dies; the driver counts
each clip once however often it is encoded, and commits a video in one transaction once all its clips are
in, so a rerun after a crash redoes only what is missing.

Ray is an optional dependency: it is imported only here, and only when ``--ray`` is asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import nvdec
from .decode import DecodeFailed, Probed, Segment, describe_error
from .errors import IndexerError
from .ray_remote import (
    KILL_HOOK_ENV,
    ChunkNotice,
    EncodedChunk,
    EncoderActor,
    GaveUp,
    decode_on_node,
    node_checkpoint,
)

if TYPE_CHECKING:
    from .pipeline import _Ingestion, _Job

log = logging.getLogger(__name__)

INSTALL_HINT = 'Ray is not installed: pip install "tvr[ray]" (in a checkout: pip install -e ".[ray]")'
CHUNKS_PER_ACTOR = 2  # encoder calls queued per actor: one running, one waiting, so it never idles
NVDEC_GROUP = "nvdec"  # the actors' concurrency group of NVDEC files (encode calls keep the default group)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local instance; "auto": join a running one; "host:port"
    decoders: int | None = None  # files decoded at once (default: the cluster's CPUs less the encoders')
    encoders: int | None = None  # encoder actors (default: one per GPU, else one)
    device: str | None = None  # encoders' device: None picks cuda when the cluster has GPUs, else cpu


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise IndexerError(INSTALL_HINT) from None
    return ray


@dataclass
class _Stream:
    """A decoding task's events as the driver reads them (or an actor's, for a file it decodes with NVDEC)."""

    job: _Job
    segment: Segment | None  # None: the task that probes the file (and leaves later segments to others)
    actor: int | None = None  # the actor decoding it with NVDEC (None: a CPU task)
    chunk_next: bool = False  # a notice was read: the next object is its chunk


@dataclass
class Cluster:
    decoders: int
    encoders: int
    device: str
    started_here: bool  # a local instance this run started (and stops)


@dataclass
class _Flow:
    streams: dict[Any, _Stream] = field(default_factory=dict)  # ObjectRefGenerator -> its stream
    chunks: deque[tuple[_Job, Any]] = field(default_factory=deque)  # (job, chunk ref) waiting for an actor
    encoding: dict[Any, tuple[_Job, int]] = field(default_factory=dict)  # result ref -> (job, actor index)
    fallback: deque[_Job] = field(default_factory=deque)  # files NVDEC gave up on, for CPU tasks

    @property
    def busy(self) -> bool:
        return bool(self.streams or self.chunks or self.encoding or self.fallback)

    def on_cpu(self) -> list[Any]:
        return [generator for generator, stream in self.streams.items() if stream.actor is None]

    def on_gpu(self) -> list[Any]:
        return [generator for generator, stream in self.streams.items() if stream.actor is not None]


@contextlib.contextmanager
def connected(options: RayOptions) -> Iterator[Cluster]:
    """Join the cluster ``options`` name (or start a local instance, stopped on leaving) and size the run."""
    ray = import_ray()
    cluster = _connect(ray, options)
    try:
        yield cluster
    finally:
        if cluster.started_here:
            ray.shutdown()


def run(ingestion: _Ingestion, options: RayOptions, cluster: Cluster) -> None:
    """Decode and encode ``ingestion``'s videos on Ray; the catalog writes stay in ``ingestion``."""
    ray = import_ray()
    kill_hook = os.environ.get(KILL_HOOK_ENV)
    actors: list[Any] = []
    try:
        actors = _start_encoders(ray, ingestion, cluster, kill_hook)
        # the decoder asked for (cpu: CPU tasks; nvdec: in the GPU actors)
        _Driver(ray, ingestion, cluster, actors, kill_hook).run(ingestion.options.decoder)
    finally:
        for actor in actors:  # a cluster joined lives on: free its resources now, even after an error
            with contextlib.suppress(Exception):  # never hide the error that ended the run
                ray.kill(actor)


def _connect(ray: Any, options: RayOptions) -> Cluster:
    started_here = False
    if not ray.is_initialized():
        address = options.address or os.environ.get("RAY_ADDRESS") or "local"
        init: dict[str, Any] = {"address": address, "logging_level": logging.WARNING, "log_to_driver": True}
        if address == "local":  # a new instance: the encoder shares the cores with the decoders, as locally
            cores = os.cpu_count() or 1
            init |= {"num_cpus": cores + (options.encoders or 1), "include_dashboard": False}
            started_here = True
        try:
            ray.init(**init)
        except ConnectionError as exc:
            raise IndexerError(f"--ray-address {address}: cannot connect to a Ray cluster: {exc}") from None
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    device = options.device or ("cuda" if gpus else "cpu")
    if device.startswith("cuda") and not gpus:
        raise IndexerError(f"--device {device} with --ray: the Ray cluster has no GPUs")
    encoders = options.encoders or (gpus if device.startswith("cuda") else 1)
    decoders = options.decoders or max(1, cpus - (0 if device.startswith("cuda") else encoders))
    log.info("Ray: %d CPUs, %d GPUs; %d decoding tasks at once, %d %s encoders", cpus, gpus, decoders, encoders, device)
    return Cluster(decoders, encoders, device, started_here)


def _start_encoders(ray: Any, ingestion: _Ingestion, cluster: Cluster, kill_hook: str | None) -> list[Any]:
    """The encoder actors, a GPU each on a GPU cluster; threaded: NVDEC files (a concurrency group of
    ``nvdec_sessions`` threads) beside encode calls (the default group, one at a time)."""
    options = ingestion.options
    actor_class = ray.remote(
        max_restarts=3, max_task_retries=3, concurrency_groups={NVDEC_GROUP: options.nvdec_sessions}
    )(EncoderActor)
    checkpoint = node_checkpoint(ingestion.settings.checkpoint)
    return [
        actor_class.options(num_cpus=1, num_gpus=1 if cluster.device.startswith("cuda") else 0).remote(
            checkpoint, cluster.device, ingestion.checkpoint_id, kill_hook, options.gpu_decode
        )
        for _ in range(cluster.encoders)
    ]


class _Driver:
    """The driver's loop: files to CPU decoding tasks (their chunks to the encoder actors) or to the actors'
    NVDEC sessions; what comes back to ``ingestion``."""

    def __init__(
        self, ray: Any, ingestion: _Ingestion, cluster: Cluster, actors: list[Any], kill_hook: str | None
    ) -> None:
        self.ray, self.ingestion, self.cluster, self.actors, self.kill_hook = ray, ingestion, cluster, actors, kill_hook
        self.decode_task = ray.remote(decode_on_node).options(
            num_cpus=1, max_retries=3, _generator_backpressure_num_objects=4
        )
        self.sessions = 0  # NVDEC files per actor (0: CPU tasks decode every file)
        self.spec = ingestion.spec
        self.load = [0] * len(actors)  # encode calls per actor
        self.decoding = [0] * len(actors)  # NVDEC files per actor
        self.max_chunks = CHUNKS_PER_ACTOR * len(actors)
        self.flow = _Flow()

    def _choose(self, requested: str) -> str:
        """``nvdec.choose_decoder`` for the actors' device, NVDEC's availability asked of an actor's node."""

        def unavailable() -> str | None:
            if not self.cluster.device.startswith("cuda"):
                return nvdec.nvdec_unavailable(self.cluster.device)  # known without asking
            try:
                reason: str | None = self.ray.get(self.actors[0].nvdec_unavailable.remote())
            except Exception as exc:
                raise IndexerError(f"the encoder actors did not start: {_reason(exc)}") from None
            return reason

        injected = self.ingestion.options.gpu_decode is not None
        return nvdec.choose_decoder(
            requested, self.cluster.device, injected=injected, unavailable=unavailable, where="in the encoder actors"
        )

    def run(self, decoder: str) -> None:
        options = self.ingestion.options
        self.sessions = options.nvdec_sessions if self._choose(decoder) == "nvdec" else 0
        # one thread per task (Ray gives each a CPU); a chunk is one encoder batch; NVDEC decodes files whole
        segment_clips = 0 if self.sessions else self.spec.segment_clips
        self.spec = dataclasses.replace(
            self.spec, threads=1, chunk_clips=options.batch_size, segment_clips=segment_clips
        )
        flow = self.flow
        while True:
            self._start()
            while flow.chunks and min(self.load) < CHUNKS_PER_ACTOR:
                job, chunk = flow.chunks.popleft()
                if job.done:
                    continue
                actor = self.load.index(min(self.load))
                self.load[actor] += 1
                flow.encoding[self.actors[actor].encode.remote(chunk)] = (job, actor)
            if not flow.busy:
                break
            reading = flow.on_gpu() + (flow.on_cpu() if len(flow.chunks) < self.max_chunks else [])
            waited = time.perf_counter()
            ready, _ = self.ray.wait([*reading, *flow.encoding], num_returns=1, timeout=1.0, fetch_local=False)
            self.ingestion.timers["wait_decode"] += time.perf_counter() - waited
            for waitable in ready:
                if waitable in flow.encoding:
                    job, actor = flow.encoding.pop(waitable)
                    self.load[actor] -= 1
                    self._encoded(job, waitable)
                else:
                    self._read(waitable)

    def _start(self) -> None:
        """New decoding: files NVDEC gave up on, then new files (and segments), as far as there is room."""
        flow, ingestion = self.flow, self.ingestion
        while len(flow.on_cpu()) < self.cluster.decoders and len(flow.chunks) < self.max_chunks:
            if flow.fallback:
                taken: tuple[_Job, Segment | None] | None = (flow.fallback.popleft(), None)
            else:
                taken = None if self.sessions else ingestion.take_task()
            if taken is None:
                break
            job, segment = taken
            stream = self.decode_task.remote(str(job.source.path), job.known_hash, self.spec, segment, self.kill_hook)
            flow.streams[stream] = _Stream(job, segment)
        while self.sessions and min(self.decoding) < self.sessions and (taken := ingestion.take_task()) is not None:
            job = taken[0]  # never a segment: files decoded with NVDEC are not split
            actor = self.decoding.index(min(self.decoding))
            self.decoding[actor] += 1
            method = self.actors[actor].decode_and_encode.options(concurrency_group=NVDEC_GROUP)
            flow.streams[method.remote(str(job.source.path), job.known_hash, self.spec)] = _Stream(job, None, actor)

    def _end(self, generator: Any) -> _Stream:
        stream = self.flow.streams.pop(generator)
        if stream.actor is not None:
            self.decoding[stream.actor] -= 1
        return stream

    def _read(self, generator: Any) -> None:
        stream = self.flow.streams[generator]
        job, ingestion = stream.job, self.ingestion
        try:
            ref = next(generator)
        except StopIteration:
            self._end(generator)
            if stream.segment is None and job.probed is None:
                ingestion.fail(job, "the decoding task ended without a result")
            return
        if stream.chunk_next:  # the chunk itself: an actor reads it where it is
            stream.chunk_next = False
            self.flow.chunks.append((job, ref))
            return
        try:
            event = self.ray.get(ref)
        except Exception as exc:  # the task failed for good (its worker died more often than Ray retries)
            ingestion.fail(job, f"decoding on the Ray cluster failed: {_reason(exc)}")
            self.ray.cancel(generator)
            self._end(generator)
            return
        ingestion.add_timings(getattr(event, "timings", {}))
        if isinstance(event, ChunkNotice):
            stream.chunk_next = True
        elif isinstance(event, Probed):
            ingestion.prepare(job, event)
        elif isinstance(event, DecodeFailed):
            ingestion.fail(job, event.error)
        elif isinstance(event, EncodedChunk):
            _store(ingestion, job, event)
        elif isinstance(event, GaveUp):
            self._end(generator)  # its last event
            self._fall_back(job, event)

    def _fall_back(self, job: _Job, gave_up: GaveUp) -> None:
        """A file NVDEC gave up on: void what it sent, and decode it with a CPU task."""
        if job.done:
            return
        level = logging.DEBUG if gave_up.expected else logging.WARNING
        log.log(level, "%s: decoding on a CPU task instead (%s)", job.source.path, gave_up.reason)
        self.ingestion.void(job)
        self.flow.fallback.append(job)

    def _encoded(self, job: _Job, result: Any) -> None:
        try:
            chunk: EncodedChunk = self.ray.get(result)
        except Exception as exc:
            self.ingestion.fail(job, f"encoding on the Ray cluster failed: {_reason(exc)}")
            return
        _store(self.ingestion, job, chunk)


def _store(ingestion: _Ingestion, job: _Job, chunk: EncodedChunk) -> None:
    ingestion.timers["encode"] += chunk.seconds
    for position, vector, thumbnail in zip(chunk.positions, chunk.vectors, chunk.thumbnails, strict=True):
        ingestion.store(job, position, vector, thumbnail)


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    return describe_error(cause if isinstance(cause, BaseException) else exc)
