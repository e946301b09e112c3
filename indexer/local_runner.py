"""Ingestion on this machine: the local loop that decodes in worker processes (or NVDEC) and encodes in
batches for the driver (``pipeline._Ingestion``), as ``ray_runner`` does on a Ray cluster.

Each worker decodes one file at a time and streams its clips in chunks, so while a batch is encoded the
workers decode the next ones; the loop reads from them only while it has room for more clips, so memory
stays bounded however long the videos. Files NVDEC gives up on go to a CPU pool, made when one does.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from . import nvdec
from .decode import DecodedChunk, DecodedClip, DecodeFailed, Probed, decode_video
from .encode import cores_restored, encode_clips, share_cores
from .workers import Message, Task, WorkerPool

if TYPE_CHECKING:
    from .pipeline import _Ingestion, _Job

log = logging.getLogger(__name__)


def run(ingestion: _Ingestion) -> None:
    """Decode and encode ``ingestion``'s videos here; the catalog writes stay in ``ingestion``."""
    with cores_restored(ingestion.encoder.device):
        _Loop(ingestion).run()


class _Loop:
    """The event loop: tasks to the decoding pool, decoded clips to a buffer, the buffer to the encoder in
    batches, each clip's vector to ``ingestion``."""

    def __init__(self, ingestion: _Ingestion) -> None:
        self.ingestion = ingestion
        self.options = ingestion.options
        self.max_buffer = 2 * self.options.batch_size + self.options.chunk_clips
        self.buffer: list[tuple[_Job, int, DecodedClip]] = []  # (job, its attempt, clip)

    def run(self) -> None:
        ingestion, batch_size = self.ingestion, self.options.batch_size

        def cpu_pool() -> WorkerPool[_Job]:
            return WorkerPool(self.options.workers, ingestion.spec, has_work=ingestion.has_work, decode=decode_video)

        pool: WorkerPool[_Job] | nvdec.GpuPool[_Job]
        if ingestion.decoder == "nvdec":  # files it gives up on go to a CPU pool, made when one does
            gpu_decode = self.options.gpu_decode or nvdec.decode_video_nvdec
            device = ingestion.encoder.device
            pool = nvdec.GpuPool(self.options.nvdec_sessions, ingestion.spec, device, cpu_pool, gpu_decode)
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
                    if pool.has_retries or ingestion.has_work():
                        continue
                    break
                waited = time.perf_counter()
                messages = pool.poll(0.2 if self.buffer else None)
                ingestion.timers["wait_decode"] += time.perf_counter() - waited
                if not messages and self.buffer:
                    self._encode(len(self.buffer))  # the workers are slower than the encoder: do not wait
                for message in messages:
                    self._handle(message)
        finally:
            pool.close()

    def _next_task(self) -> Task[_Job] | None:
        if len(self.buffer) >= self.max_buffer:
            return None
        taken = self.ingestion.take_task()
        if taken is None:
            return None
        job, segment = taken
        return Task(str(job.source.path), job.known_hash, job, segment)

    def _handle(self, message: Message[_Job]) -> None:
        job, ingestion = message.owner, self.ingestion
        if message.kind == "retry":  # its worker died: the task runs again; the clips that came stay valid
            log.debug("%s: decoding again on a fresh worker", job.source.path)
        elif message.kind == "restart":
            ingestion.void(job)
        elif message.kind == "failed":
            ingestion.fail(job, message.error or "unknown error")
        elif message.kind == "event":
            event = message.event
            ingestion.add_timings(getattr(event, "timings", {}))
            if isinstance(event, Probed):
                ingestion.prepare(job, event)
            elif isinstance(event, DecodedChunk) and not job.done:
                self.buffer += [(job, job.attempt, clip) for clip in event.clips]
            elif isinstance(event, DecodeFailed):
                ingestion.fail(job, event.error)

    def _encode(self, count: int) -> None:
        ingestion = self.ingestion
        full = len(self.buffer) >= self.max_buffer  # then the loop stopped reading and the decoders wait
        share_cores(ingestion.encoder.device, 0 if full else self.options.workers)
        taken, self.buffer = self.buffer[:count], self.buffer[count:]
        batch = [(job, clip) for job, attempt, clip in taken if not job.done and attempt == job.attempt]
        if not batch:
            return
        started = time.perf_counter()
        vectors = encode_clips(ingestion.encoder, [clip for _, clip in batch])
        ingestion.timers["encode"] += time.perf_counter() - started
        for (job, clip), vector in zip(batch, vectors, strict=True):
            ingestion.store(job, clip.position, vector, clip.thumbnail)
