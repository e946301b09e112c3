"""What Ray runs on the cluster's nodes for ``ray_runner`` (plain Python; the driver wraps it with
``ray.remote``, so this module never imports Ray):

- ``decode_on_node``, the decoding task: ``decode.decode_video`` unchanged, as a streaming generator that
  yields a small ``ChunkNotice`` before each chunk, so the driver reads the notice and hands the chunk to an
  actor unread;
- ``EncoderActor``, one encoder loaded once (``model.load_encoder``, of the checkpoint ``node_checkpoint``
  names as every node can load it) that encodes the chunks it is handed (``encode.encode_clips``), or
  decodes files itself with NVDEC (``nvdec.decode_video_nvdec``, several at once on their own CUDA streams)
  and sends back only vectors, with ``GaveUp`` last for a file NVDEC cannot decode;
- the test hook that kills a decoding task's or an actor's process once mid-file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import nvdec
from .decode import DecodedChunk, DecodeFailed, DecodeSpec, Probed, Segment, decode_video
from .errors import IndexerError
from .nvdec_source import UseCpu, first_line

# Test hook: "decoder:MARKER" or "encoder:MARKER" kills that process once (SIGKILL) mid-file, MARKER being a
# file created on the way so that the retry lives; the tests prove the job survives a lost worker.
KILL_HOOK_ENV = "TVR_TEST_KILL_ONCE"


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
    timings: dict[str, float] = field(default_factory=dict)  # its decoding's, when the actor decoded it too


@dataclass
class GaveUp:
    """Yielded by an actor that gives up decoding a file with NVDEC: a CPU task decodes it instead."""

    reason: str
    expected: bool  # UseCpu (a codec NVDEC lacks, say), not an error


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


def node_checkpoint(source: str) -> str:
    """``source`` as every node can load it: a packaged name or an open_clip tag as is, a local path made
    absolute (nodes must see it at that path)."""
    from model.checkpoint import is_path_like, list_packaged

    if source.startswith("openclip:") or (not is_path_like(source) and source in list_packaged()):
        return source
    return str(Path(source).expanduser().resolve())


class EncoderActor:
    """One encoder, loaded once, encoding the chunks it is handed, or decoding files with NVDEC and encoding
    their chunks itself (``gpu_decode``: ``nvdec.decode_video_nvdec``, or a stand-in for tests)."""

    def __init__(
        self,
        checkpoint: str,
        device: str,
        checkpoint_id: str,
        kill_hook: str | None,
        gpu_decode: nvdec.GpuDecodeFn | None = None,
    ) -> None:
        from model import load_encoder

        self.encoder = load_encoder(checkpoint, device=device)
        if self.encoder.checkpoint_id != checkpoint_id:
            raise IndexerError(
                f"checkpoint {checkpoint!r} is {self.encoder.checkpoint_id} on this node but {checkpoint_id} on "
                "the driver: every node must see the same checkpoint file"
            )
        self.kill_hook = kill_hook
        self.gpu_decode = gpu_decode or nvdec.decode_video_nvdec
        self.encoding = threading.Lock()  # NVDEC sessions' threads and encode calls share one encoder

    def nvdec_unavailable(self) -> str | None:
        return nvdec.nvdec_unavailable(self.encoder.device)

    def encode(self, chunk: DecodedChunk) -> EncodedChunk:
        from .encode import encode_clips

        _maybe_die(self.kill_hook, "encoder")
        with self.encoding:
            started = time.perf_counter()
            vectors = encode_clips(self.encoder, chunk.clips)
        return EncodedChunk(
            [clip.position for clip in chunk.clips],
            vectors,
            [clip.thumbnail for clip in chunk.clips],
            time.perf_counter() - started,
        )

    def decode_and_encode(
        self, path: str, known_hash: str | None, spec: DecodeSpec
    ) -> Iterator[Probed | DecodeFailed | EncodedChunk | GaveUp]:
        """A file decoded with NVDEC on this actor's device, each chunk encoded where its frames are: the
        decoding events with vectors in place of frames, never frames; ``GaveUp`` last if NVDEC cannot."""
        device = self.encoder.device
        try:
            with _own_stream(device):  # files decoded at once work side by side
                for event in self.gpu_decode(path, known_hash, spec, device):
                    if isinstance(event, DecodedChunk):
                        encoded = self.encode(event)
                        encoded.timings = event.timings
                        yield encoded
                    else:
                        yield event
        except Exception as exc:  # UseCpu, or anything else: a CPU task decodes this file
            yield GaveUp(first_line(exc), isinstance(exc, UseCpu))


def _own_stream(device: Any) -> contextlib.AbstractContextManager[Any]:
    """A CUDA stream of its own on ``device`` for the calling thread (nothing on a CPU)."""
    import torch

    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.stream(torch.cuda.Stream(device))


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
