"""Motion twins: hard negatives for synthetic clips that differ from their original only in motion.

A synthetic clip (``tvr synth``) played backwards or mirrored is again a valid clip of the synthetic
world, and its caption follows from the original's: backwards, "moves to the left, then moves up" shows
"moves down, then moves to the right"; mirrored left to right it shows "moves to the right, then moves
up". A twin differs from its clip in direction or order only, never in the axis of motion, which random
batches already teach. Training with a clip and its twin in the same batch (and ``loss.twin_separation``)
makes the model read direction and order (issue 3).

A transform is a tuple ``(reverse, hflip, vflip)`` applied to a clip's frames ``(T, C, H, W)``: time
reversal, then flipping x, then flipping y. A triangle (apex up) only keeps its shape under reversal and
the left-right mirror.
"""

from __future__ import annotations

import dataclasses
import itertools
from functools import cache

import numpy as np
import torch

from .synth import MOTIONS, Scene, scene_space

Transform = tuple[bool, bool, bool]  # reverse, hflip, vflip
IDENTITY: Transform = (False, False, False)
_PHRASE = {vector: phrase for phrase, vector in MOTIONS.items()}
_SYMMETRIC = {"circle", "square"}  # unchanged by both flips; a triangle only by hflip


@cache
def _scene_of_caption() -> dict[str, Scene]:
    return {scene.caption: scene for scene in scene_space()}


def caption_scene(caption: str) -> Scene | None:
    """The synthetic scene a caption describes, or None when it is not a synthetic caption."""
    return _scene_of_caption().get(caption)


def _move(phrase: str, transform: Transform) -> str:
    _, hflip, vflip = transform
    dx, dy = MOTIONS[phrase]
    return _PHRASE[(-dx if hflip else dx, -dy if vflip else dy)]


def _opposite(phrase: str) -> str:
    """The motion phrase of the opposite direction (``moves up`` -> ``moves down``)."""
    dx, dy = MOTIONS[phrase]
    return _PHRASE[(-dx, -dy)]


def transformed_scene(scene: Scene, transform: Transform) -> Scene | None:
    """What a clip of ``scene`` shows after ``transform``; None when the shape would not stay valid."""
    reverse, _, vflip = transform
    if scene.shape not in _SYMMETRIC and vflip:
        return None
    events = [_move(e, transform) for e in scene.events]
    if reverse:
        events = [_opposite(e) for e in reversed(events)]
    return dataclasses.replace(scene, motion=events[0], then=events[1] if len(events) > 1 else None)


def reversed_scene(scene: Scene) -> Scene:
    """The scene a clip of ``scene`` shows when played backwards."""
    backwards = transformed_scene(scene, (True, False, False))
    assert backwards is not None, "only an up-down flip can give a scene that does not exist"
    return backwards


def transform_frames(frames: torch.Tensor, transform: Transform) -> torch.Tensor:
    """Apply ``transform`` to frames ``(..., T, C, H, W)``."""
    reverse, hflip, vflip = transform
    if reverse:
        frames = frames.flip(-4)
    if hflip:
        frames = frames.flip(-1)
    if vflip:
        frames = frames.flip(-2)
    return frames.contiguous()


_BOTH = (False, True)
ALL_TRANSFORMS: list[Transform] = [t for t in itertools.product(_BOTH, _BOTH, _BOTH) if t != IDENTITY]


def add_motion_twins(
    frames: torch.Tensor, captions: list[str], rng: np.random.Generator
) -> tuple[torch.Tensor, list[str]]:
    """The batch followed by one twin per clip: ``(2B, T, C, H, W)`` frames and 2B captions.

    Each twin is a random transform whose caption is new to the batch. A clip without one (not a synthetic
    caption, or a triangle moving up then down, which every valid transform maps to itself) is repeated
    unchanged; the loss counts equal captions as matching, so the copy costs only compute.
    """
    seen = set(captions)
    twins, twin_captions = [], []
    for clip, caption in zip(frames, captions, strict=True):
        scene = caption_scene(caption)
        choices = []
        if scene is not None:
            for transform in ALL_TRANSFORMS:
                other = transformed_scene(scene, transform)
                if other is not None and other.caption not in seen:
                    choices.append((transform, other.caption))
        if choices:
            transform, caption = choices[rng.integers(len(choices))]
            clip = transform_frames(clip, transform)
            seen.add(caption)
        twins.append(clip)
        twin_captions.append(caption)
    return torch.cat([frames, torch.stack(twins)]), [*captions, *twin_captions]
