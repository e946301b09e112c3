"""Ingestion on a Ray cluster (``tvr ingest --ray``): the local pipeline's stages, placed by Ray.

The driver plans, writes the catalog and publishes the index exactly as a local run does
(``pipeline._Ingestion``); only decoding and encoding move to the cluster:

- each file is decoded by a Ray task running ``decode.decode_video`` unchanged, as a streaming generator;
- each chunk of clips is encoded by one of a pool of encoder actors (``encode.encode_clips`` on
  ``model.load_encoder``'s encoder), each holding a GPU where the cluster has them.

Frames travel from a decoding task to an actor through Ray's object store, never through the driver: for
each chunk the task yields a small ``ChunkNotice`` first (read by the driver) and then the chunk itself
(handed to an actor unread). Only vectors and thumbnails come back. Ray retries a decoding task or restarts
an actor whose process dies; the driver counts each clip once however often it is encoded, and commits a
video in one transaction once all its clips are in, so a rerun after a crash redoes only what is missing.

Ray is an optional dependency: it is imported only here, and only when ``--ray`` is asked for.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .decode import DecodedChunk, DecodeFailed, DecodeSpec, Probed, Segment, decode_video, describe_error
from .errors import IndexerError

if TYPE_CHECKING:
    from .pipeline import _Ingestion, _Job

log = logging.getLogger(__name__)

INSTALL_HINT = 'Ray is not installed: pip install "tvr[ray]" (in a checkout: pip install -e ".[ray]")'
# Test hook: "decoder:MARKER" or "encoder:MARKER" kills that process once (SIGKILL) mid-file, MARKER being a
# file created on the way so that the retry lives; the tests prove the job survives a lost worker.
KILL_HOOK_ENV = "TVR_TEST_KILL_ONCE"
CHUNKS_PER_ACTOR = 2  # encoder calls queued per actor: one running, one waiting, so it never idles


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local instance; "auto": join a running one; "host:port"
    decoders: int | None = None  # files decoded at once (default: the cluster's CPUs less the encoders')
    encoders: int | None = None  # encoder actors (default: one per GPU, else one)
    device: str | None = None  # encoders' device: None picks cuda when the cluster has GPUs, else cpu


@dataclass
class ChunkNotice:
    """Yielded by a decoding task just before each chunk: what the driver needs to know of it."""

    clips: int
    timings: dict[str, float]


@dataclass
class EncodedChunk:
    positions: list[int]
    vectors: np.ndarray  # float32 (len(positions), dim)
    thumbnails: list[bytes]
    seconds: float  # spent encoding


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise IndexerError(INSTALL_HINT) from None
    return ray


# --- what runs on the cluster ---------------------------------------------------------------------------------


def decode_on_node(
    path: str, known_hash: str | None, spec: DecodeSpec, segment: Segment | None, kill_hook: str | None
) -> Any:
    """The decoding task: ``decode_video``'s events (a file, or a segment of a long one), each chunk
    preceded by its notice."""
    for event in decode_video(path, known_hash, spec, segment):
        if isinstance(event, DecodedChunk):
            yield ChunkNotice(len(event.clips), event.timings)
            yield event
            _maybe_die(kill_hook, "decoder")
        else:
            yield event


class EncoderActor:
    """One encoder, loaded once, encoding the chunks it is handed."""

    def __init__(self, checkpoint: str, device: str, checkpoint_id: str, kill_hook: str | None) -> None:
        from model import load_encoder

        self.encoder = load_encoder(checkpoint, device=device)
        if self.encoder.checkpoint_id != checkpoint_id:
            raise IndexerError(
                f"checkpoint {checkpoint!r} is {self.encoder.checkpoint_id} on this node but {checkpoint_id} on "
                "the driver: every node must see the same checkpoint file"
            )
        self.kill_hook = kill_hook

    def encode(self, chunk: DecodedChunk) -> EncodedChunk:
        from .encode import encode_clips

        _maybe_die(self.kill_hook, "encoder")
        started = time.perf_counter()
        vectors = encode_clips(self.encoder, chunk.clips)
        return EncodedChunk(
            [clip.position for clip in chunk.clips],
            vectors,
            [clip.thumbnail for clip in chunk.clips],
            time.perf_counter() - started,
        )


def _maybe_die(hook: str | None, role: str) -> None:
    if not hook:
        return
    wanted, _, marker = hook.partition(":")
    if wanted != role:
        return
    try:
        Path(marker).touch(exist_ok=False)
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


# --- the driver ---------------------------------------------------------------------------------------------


@dataclass
class _Stream:
    """A decoding task's events as the driver reads them."""

    job: _Job
    segment: Segment | None  # None: the task that probes the file (and leaves later segments to others)
    chunk_next: bool = False  # a notice was read: the next object is its chunk


@dataclass
class _Cluster:
    decoders: int
    encoders: int
    device: str
    started_here: bool  # a local instance this run started (and stops)


@dataclass
class _Flow:
    streams: dict[Any, _Stream] = field(default_factory=dict)  # ObjectRefGenerator -> its stream
    chunks: deque[tuple[_Job, Any]] = field(default_factory=deque)  # (job, chunk ref) waiting for an actor
    encoding: dict[Any, tuple[_Job, int]] = field(default_factory=dict)  # result ref -> (job, actor index)

    @property
    def busy(self) -> bool:
        return bool(self.streams or self.chunks or self.encoding)


def run(ingestion: _Ingestion, options: RayOptions) -> None:
    """Decode and encode ``ingestion``'s videos on Ray; the catalog writes stay in ``ingestion``."""
    ray = import_ray()
    cluster = _connect(ray, options, ingestion.options.batch_size)
    try:
        _drive(ray, ingestion, cluster)
    finally:
        if cluster.started_here:
            ray.shutdown()


def _connect(ray: Any, options: RayOptions, batch_size: int) -> _Cluster:
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
    return _Cluster(decoders, encoders, device, started_here)


def _drive(ray: Any, ingestion: _Ingestion, cluster: _Cluster) -> None:
    kill_hook = os.environ.get(KILL_HOOK_ENV)
    gpu = cluster.device.startswith("cuda")
    actor_class = ray.remote(max_restarts=3, max_task_retries=3)(EncoderActor)
    checkpoint = node_checkpoint(ingestion.settings.checkpoint)
    actors = [
        actor_class.options(num_cpus=1, num_gpus=1 if gpu else 0).remote(
            checkpoint, cluster.device, ingestion.checkpoint_id, kill_hook
        )
        for _ in range(cluster.encoders)
    ]
    decode_task = ray.remote(decode_on_node).options(num_cpus=1, max_retries=3, _generator_backpressure_num_objects=4)
    # one thread per task (Ray gives each a CPU); a chunk is one encoder batch
    spec = dataclasses.replace(ingestion.spec, threads=1, chunk_clips=ingestion.options.batch_size)
    load = [0] * len(actors)
    flow = _Flow()
    max_chunks = CHUNKS_PER_ACTOR * len(actors)

    while True:
        while len(flow.streams) < cluster.decoders and len(flow.chunks) < max_chunks:
            taken = ingestion.take_task()
            if taken is None:
                break
            job, segment = taken
            stream = decode_task.remote(str(job.source.path), job.known_hash, spec, segment, kill_hook)
            flow.streams[stream] = _Stream(job, segment)
        while flow.chunks and min(load) < CHUNKS_PER_ACTOR:
            job, chunk = flow.chunks.popleft()
            if job.done:
                continue
            actor = load.index(min(load))
            load[actor] += 1
            flow.encoding[actors[actor].encode.remote(chunk)] = (job, actor)
        if not flow.busy:
            break
        reading = list(flow.streams) if len(flow.chunks) < max_chunks else []
        waited = time.perf_counter()
        ready, _ = ray.wait([*reading, *flow.encoding], num_returns=1, timeout=1.0, fetch_local=False)
        ingestion.timers["wait_decode"] += time.perf_counter() - waited
        for waitable in ready:
            if waitable in flow.encoding:
                job, actor = flow.encoding.pop(waitable)
                load[actor] -= 1
                _encoded(ray, ingestion, job, waitable)
            else:
                _read(ray, ingestion, flow, waitable)


def _read(ray: Any, ingestion: _Ingestion, flow: _Flow, generator: Any) -> None:
    stream = flow.streams[generator]
    job = stream.job
    try:
        ref = next(generator)
    except StopIteration:
        del flow.streams[generator]
        if stream.segment is None and job.probed is None:
            ingestion.fail(job, "the decoding task ended without a result")
        return
    if stream.chunk_next:  # the chunk itself: an actor reads it where it is
        stream.chunk_next = False
        flow.chunks.append((job, ref))
        return
    try:
        event = ray.get(ref)
    except Exception as exc:  # the task failed for good (its worker died more often than Ray retries)
        ingestion.fail(job, f"decoding on the Ray cluster failed: {_reason(exc)}")
        ray.cancel(generator)
        del flow.streams[generator]
        return
    ingestion.add_timings(getattr(event, "timings", {}))
    if isinstance(event, ChunkNotice):
        stream.chunk_next = True
    elif isinstance(event, Probed):
        ingestion.prepare(job, event)
    elif isinstance(event, DecodeFailed):
        ingestion.fail(job, event.error)


def _encoded(ray: Any, ingestion: _Ingestion, job: _Job, result: Any) -> None:
    try:
        chunk: EncodedChunk = ray.get(result)
    except Exception as exc:
        ingestion.fail(job, f"encoding on the Ray cluster failed: {_reason(exc)}")
        return
    ingestion.timers["encode"] += chunk.seconds
    for position, vector, thumbnail in zip(chunk.positions, chunk.vectors, chunk.thumbnails, strict=True):
        ingestion.store(job, position, vector, thumbnail)


def node_checkpoint(source: str) -> str:
    """``source`` as every node can load it: a packaged name or an open_clip tag as is, a local path made
    absolute (nodes must see it at that path)."""
    from model.checkpoint import is_path_like, list_packaged

    if source.startswith("openclip:") or (not is_path_like(source) and source in list_packaged()):
        return source
    return str(Path(source).expanduser().resolve())


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    return describe_error(cause if isinstance(cause, BaseException) else exc)
