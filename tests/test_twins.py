"""Motion twins: transformed synthetic clips show exactly what their new captions say."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.train.loss import caption_labels, symmetric_infonce
from model.train.synth import MOTIONS, Scene, draw_scenes, render_scene
from model.train.twins import (
    ALL_TRANSFORMS,
    add_motion_twins,
    caption_scene,
    reversed_scene,
    transform_frames,
    transformed_scene,
)


def _centres(frames: np.ndarray) -> np.ndarray:
    """(T, 2) x, y centroid of the pixels that differ from the background (the corner pixel)."""
    moving = np.abs(frames.astype(int) - frames[:1, :1, :1].astype(int)).sum(-1) > 30
    return np.array([(xs.mean(), ys.mean()) for ys, xs in (np.nonzero(m) for m in moving)])


def test_every_valid_transform_moves_the_shape_as_its_caption_says():
    rng = np.random.default_rng(0)
    checked = 0
    for scene in draw_scenes(40, seed=3):
        frames = render_scene(scene, 64, rng)  # (T, H, W, 3)
        for transform in ALL_TRANSFORMS:
            shown = transformed_scene(scene, transform)
            if shown is None:
                assert scene.shape == "triangle"
                continue
            moved = transform_frames(torch.from_numpy(frames).permute(0, 3, 1, 2), transform)
            centres = _centres(moved.permute(0, 2, 3, 1).numpy())
            span = len(centres) // len(shown.events)
            for k, event in enumerate(shown.events):
                step = centres[(k + 1) * span - 1] - centres[k * span]
                assert np.dot(step, MOTIONS[event]) > 0.9 * np.linalg.norm(step), (scene.caption, transform, event)
                checked += 1
    assert checked > 300


def test_reversal_and_caption_parsing():
    scene = Scene("red", "circle", "moves to the left", "moves up", "small", "slowly", "black")
    back = reversed_scene(scene)
    assert (back.motion, back.then) == ("moves down", "moves to the right")
    assert caption_scene(back.caption) == back
    assert caption_scene("two people walk a dog") is None
    triangle = Scene("red", "triangle", "moves up", None, "small", "slowly", "black")
    assert transformed_scene(triangle, (False, False, True)) is None  # upside down: not a triangle of the world
    assert transformed_scene(triangle, (True, True, False)).motion == "moves down"  # reversed, mirrored


def test_twins_double_the_batch_with_new_captions():
    captions = [s.caption for s in draw_scenes(40, seed=5) if s.shape != "triangle"][:12]
    captions.append("a large red triangle quickly moves up, then moves down, on a gray background")
    captions.append("a person is cooking")  # not synthetic: repeated unchanged
    frames = torch.randn(len(captions), 4, 3, 8, 8)
    both, all_captions = add_motion_twins(frames, captions, np.random.default_rng(0))
    assert both.shape == (2 * len(captions), 4, 3, 8, 8) and all_captions[: len(captions)] == captions
    twins = all_captions[len(captions) :]
    assert len(set(twins[:12])) == 12 and not set(twins[:12]) & set(captions)
    for original, twin in zip(captions[:12], twins[:12], strict=True):
        a, b = caption_scene(original), caption_scene(twin)
        assert (a.colour, a.shape, a.size, a.speed, a.background) == (b.colour, b.shape, b.size, b.speed, b.background)
    assert twins[12:] == captions[12:]  # no valid twin: the same clip again
    assert torch.equal(both[-1], frames[-1])


def test_loss_counts_equal_captions_as_matches():
    torch.manual_seed(0)
    video, text = torch.randn(4, 8), torch.randn(4, 8)
    scale = torch.tensor(10.0)
    distinct = caption_labels(["a", "b", "c", "d"])
    assert symmetric_infonce(video, text, scale, distinct) == pytest.approx(
        float(symmetric_infonce(video, text, scale))
    )
    # rows 0 and 3 carry one caption: caption 0's probability is that of clips 0 and 3 together
    labels = caption_labels(["a", "b", "c", "a"])
    v, t = torch.nn.functional.normalize(video, dim=-1), torch.nn.functional.normalize(text, dim=-1)
    logits = scale * t @ v.T
    p = logits.softmax(1)
    t2v = -torch.log(torch.stack([p[0, 0] + p[0, 3], p[1, 1], p[2, 2], p[3, 0] + p[3, 3]])).mean()
    q = logits.softmax(0)
    v2t = -torch.log(torch.stack([q[0, 0] + q[3, 0], q[1, 1], q[2, 2], q[0, 3] + q[3, 3]])).mean()
    assert float(symmetric_infonce(video, text, scale, labels)) == pytest.approx(float(0.5 * (t2v + v2t)), rel=1e-5)


def test_twin_separation_pushes_twins_apart_even_when_they_embed_alike():
    from model.train.loss import twin_separation

    video = torch.tensor([[1.0, 0.0], [1.0, 1e-4], [0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], requires_grad=True)
    pairs = torch.tensor([[0, 1], [2, 3]])  # pair (0, 1) alike in both towers; pair (2, 3) already apart
    loss = twin_separation(video, text, pairs, margin=1.0)
    assert float(loss) == pytest.approx((1.0 - 1e-4) / 2 + 1.0 / 2, abs=1e-4)
    loss.backward()
    # near-identical twins still get a gradient of full size (a cosine penalty's would be ~1e-4)
    assert video.grad[0].norm() == pytest.approx(0.5, rel=1e-2) and video.grad[1].norm() == pytest.approx(0.5, rel=1e-2)
    assert torch.isfinite(text.grad).all()
    assert video.grad[2].abs().sum() == 0 and video.grad[3].abs().sum() == 0  # beyond the margin: untouched
    assert float(twin_separation(video, text, torch.zeros((0, 2), dtype=torch.long))) == 0.0
