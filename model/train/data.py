"""Training data: decoded clips for caption pairs, and a resumable, rank-sharded batch order."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from model.preprocess import FramePreprocess
from model.video import VideoReadError, read_clip

from .datasets import ClipRef, Pair

log = logging.getLogger(__name__)


class ClipFrames(Dataset[torch.Tensor]):
    """Item i: the frames (T, 3, S, S) of clip i, decoded on every access (in the DataLoader's workers, if
    any) and resized and normalised by ``preprocess``, the model's. An ``int`` stands for OpenAI CLIP's
    preprocessing at that size. ``CachedFrames`` keeps the items of small sets in memory instead.
    """

    def __init__(
        self,
        clips: Sequence[ClipRef],
        num_frames: int,
        preprocess: FramePreprocess | int,
        sampling: str = "uniform",
    ) -> None:
        self.clips = list(clips)
        self.num_frames = num_frames
        self.preprocess = preprocess if isinstance(preprocess, FramePreprocess) else FramePreprocess(preprocess)
        self.sampling = sampling

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> torch.Tensor:
        clip = self.clips[index]
        start = clip.start or 0.0
        end = clip.end if clip.end is not None else math.inf  # read_clip stops at the video's end
        try:
            frames = read_clip(clip.path, start, end, self.num_frames, mode=self.sampling)
        except VideoReadError:
            log.error("cannot decode %s for training", clip.path)
            raise
        return self.preprocess(frames)


class CachedFrames(Dataset[torch.Tensor]):
    """The items of a ``ClipFrames`` decoded once into memory (float16, normalised), for small sets trained
    for many epochs."""

    def __init__(self, source: ClipFrames, workers: int = 0) -> None:
        self.clips = source.clips
        loader = torch.utils.data.DataLoader(source, batch_size=16, num_workers=workers)
        self.frames = torch.cat([batch.half() for batch in loader])

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.frames[index].float()


class PairData(Dataset[tuple[torch.Tensor, str]]):
    """Item i: (frames of pair i's clip, pair i's caption); ``frames`` holds every clip of the pairs."""

    def __init__(self, pairs: Sequence[Pair], frames: ClipFrames | CachedFrames) -> None:
        self.pairs = list(pairs)
        self.frames = frames
        index = {clip: i for i, clip in enumerate(self.frames.clips)}
        self.clip_of = [index[p.clip] for p in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        return self.frames[self.clip_of[index]], self.pairs[index].caption


class ShardedBatches(Sampler[list[int]]):
    """Global batches in a seeded per-epoch order; each rank yields its contiguous slice of every batch.

    The union of the ranks' slices of batch b is exactly the single-process batch b, in rank order, so
    several processes see the same global batches as one. ``skip`` batches at the start of ``epoch`` are
    left out, which is how ``--resume`` continues mid-epoch with the same data order.
    """

    def __init__(self, size: int, global_batch: int, rank: int = 0, world: int = 1, seed: int = 0) -> None:
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} must be a multiple of the {world} processes")
        if size < global_batch:
            raise ValueError(f"the training set has {size} pairs, fewer than one batch of {global_batch}")
        self.size, self.global_batch, self.rank, self.world, self.seed = size, global_batch, rank, world, seed
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def batches_per_epoch(self) -> int:
        return self.size // self.global_batch  # the last incomplete batch is dropped

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.skip

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        local = self.global_batch // self.world
        for b in range(self.skip, self.batches_per_epoch()):
            batch = order[b * self.global_batch : (b + 1) * self.global_batch]
            yield batch[self.rank * local : (self.rank + 1) * local].tolist()
