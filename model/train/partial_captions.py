"""Partial captions: synthetic captions shortened the way users search, with every clip they describe as a match.

A ``tvr synth`` caption names seven attributes ("a small red circle slowly moves to the right on a black
background"); a user types three ("a red circle moves to the right"). A model that only saw full captions
ranks such a query badly (issue 15). Training shortens some captions, leaving out the size, the speed or the
background (colour, shape and the motions always stay), and the loss counts every clip of the batch that
has the attributes a caption names as a match of that caption, not only the clip it was written for.
Either the shortened captions replace full ones (``shorten_captions``, ``partial_captions``), or they are
extra queries beside the full captions (``shortened_queries``, ``partial_queries``), trained text-to-video
only, so that every clip keeps its full caption and the video tower still learns every attribute.

Matching is by keys: a clip's key is its scene's attribute indices; a caption's key ("wants") is the same
with ``ANY`` where the caption leaves an attribute out. Caption ``i`` matches clip ``j`` when every column
of ``wants[i]`` is ``ANY`` or equal to ``keys[j]``. Column 0 carries a hash of a caption that is not
synthetic (0 for synthetic ones), so other captions match only clips bearing that exact caption.
"""

from __future__ import annotations

import numpy as np
import torch

from .loss import caption_labels
from .synth import BACKGROUNDS, COLOURS, MOTIONS, SHAPES, SIZES, SPEEDS, Scene
from .twins import caption_scene

ANY = -1  # a caption's key: the caption does not name this attribute
NOT_SYNTHETIC = -2  # a clip's attribute columns when its caption is not synthetic: no attribute matches
OPTIONAL = ("size", "speed", "background")  # what a partial caption may leave out, in key order below
_INDEX: dict[str, dict[str | None, int]] = {
    "colour": {c: i for i, c in enumerate(COLOURS)},
    "shape": {s: i for i, s in enumerate(SHAPES)},
    "motion": {m: i for i, m in enumerate(MOTIONS)},
    "then": {None: len(MOTIONS), **{m: i for i, m in enumerate(MOTIONS)}},  # None: one motion only
    "size": {s: i for i, s in enumerate(SIZES)},
    "speed": {s: i for i, s in enumerate(SPEEDS)},
    "background": {b: i for i, b in enumerate(BACKGROUNDS)},
}
COLUMNS = ("caption", *_INDEX)  # key columns


def scene_key(scene: Scene) -> list[int]:
    """The key of a clip of ``scene``."""
    return [0, *(_INDEX[name][getattr(scene, name)] for name in _INDEX)]


def clip_keys(captions: list[str]) -> torch.Tensor:
    """int64 ``(N, len(COLUMNS))`` keys of the clips bearing ``captions`` (their full captions)."""
    hashes = caption_labels(captions).tolist()
    rows = []
    for caption, digest in zip(captions, hashes, strict=True):
        scene = caption_scene(caption)
        rows.append(scene_key(scene) if scene else [digest] + [NOT_SYNTHETIC] * (len(COLUMNS) - 1))
    return torch.tensor(rows, dtype=torch.int64)


def shorten_captions(
    captions: list[str], keys: torch.Tensor, fraction: float, rng: np.random.Generator
) -> tuple[list[str], torch.Tensor]:
    """Each synthetic caption, with probability ``fraction``, shortened: size, speed and background are each
    left out with probability 1/2. Returns the captions to train on and their keys (``wants``)."""
    shortened, wants = list(captions), keys.clone()
    for row, caption in enumerate(captions):
        scene = caption_scene(caption)
        if scene is None or rng.random() >= fraction:
            continue
        keep = {name: bool(rng.random() < 0.5) for name in OPTIONAL}
        shortened[row] = scene.describe(**keep)
        for name, kept in keep.items():
            if not kept:
                wants[row, COLUMNS.index(name)] = ANY
    return shortened, wants


def shortened_queries(
    captions: list[str], keys: torch.Tensor, count: int, rng: np.random.Generator
) -> tuple[list[str], torch.Tensor]:
    """``count`` extra queries: captions drawn without replacement, each shortened as ``shorten_captions``
    does (so one in eight keeps every attribute), and their keys (``wants``). A fixed count, so that every
    rank of a distributed run gathers as many."""
    rows = rng.choice(len(captions), size=count, replace=False)
    return shorten_captions([captions[row] for row in rows], keys[torch.from_numpy(rows)], 1.0, rng)
