"""The encoding stage: decoded clips (uint8 frames) in, L2-normalised embeddings out, on the encoder's device."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .decode import DecodedClip
from .errors import IndexerError

if TYPE_CHECKING:
    import torch

    from model.protocols import VideoTextEncoder


def check_device(device: str) -> None:
    """Fail early with a clear message when ``device`` cannot be used."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise IndexerError(f"--device {device}: CUDA is not available here (use --device cpu)")
    elif device != "cpu":
        raise IndexerError(f"--device {device!r}: expected cpu or cuda")


def share_cores(device: torch.device, decoding: int) -> None:
    """On a CPU, give the encoder the cores that ``decoding`` busy decoder processes leave: OpenMP threads
    that fight busy decoders for the cores cost more than they bring (the demo model spent 29 s encoding
    143 clips beside two decoders with two threads, 2.3 s with one: docs/BENCHMARKS.md, "Indexer")."""
    if device.type != "cpu":
        return
    import torch

    wanted = max(1, (os.cpu_count() or 1) - decoding)
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


@contextlib.contextmanager
def cores_restored(device: torch.device) -> Iterator[None]:
    """Put torch's thread count back as it was once ``share_cores`` is done with it: an ingest run inside
    a longer process (a notebook, the tests) must not leave its encoder's share behind."""
    if device.type != "cpu":
        yield
        return
    import torch

    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


def encode_clips(encoder: VideoTextEncoder, clips: Sequence[DecodedClip]) -> np.ndarray:
    """float32 (len(clips), embed_dim): the frames are normalised where the encoder runs (a quarter of the
    bytes cross to a GPU as uint8). Frames decoded on the GPU (``nvdec``) are tensors there already: they
    are stacked where they are, without a copy through host memory."""
    import torch

    if all(isinstance(clip.frames, np.ndarray) for clip in clips):
        frames = torch.from_numpy(np.stack([clip.frames for clip in clips])).to(encoder.device)
    else:
        parts = []
        for clip in clips:
            part = torch.as_tensor(clip.frames)
            if part.device.type != encoder.device.type:
                part = part.to(encoder.device)
            elif part.is_cuda:  # made on a decoding thread's stream: keep its memory until this stream is done
                part.record_stream(torch.cuda.current_stream(part.device))
            parts.append(part)
        frames = torch.stack(parts)
    frames = encoder.preprocess.normalize(frames)
    return encoder.encode_video(frames).float().cpu().numpy()
