"""Partial captions: shortened synthetic captions read as users type them, matched to every clip they describe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.train.loss import caption_labels, query_loss, symmetric_infonce
from model.train.partial_captions import ANY, COLUMNS, clip_keys, shorten_captions, shortened_queries
from model.train.synth import Scene, draw_scenes
from model.train.trainer import TrainConfig, pair_loss
from model.train.twins import caption_scene
from service.demo import EXAMPLE_QUERIES


def test_the_shortest_caption_is_how_the_demo_page_asks():
    for query in EXAMPLE_QUERIES:
        then = query.motions[1] if len(query.motions) > 1 else None
        scene = Scene(query.colour, query.shape, query.motions[0], then, "large", "quickly", "gray")
        assert scene.describe(size=False, speed=False, background=False) == query.text
        assert scene.describe() == scene.caption and caption_scene(scene.caption) == scene


def test_a_shortened_caption_wants_exactly_the_attributes_it_names():
    captions = [scene.caption for scene in draw_scenes(200, 3)] + ["a person is cooking"]
    keys = clip_keys(captions)
    short, wants = shorten_captions(captions, keys, 1.0, np.random.default_rng(0))
    assert short[-1] == captions[-1] and torch.equal(wants[-1], keys[-1])  # not synthetic: left alone
    left_out = {name: 0 for name in ("size", "speed", "background")}
    for text, caption, want, key in zip(short[:-1], captions, wants, keys, strict=False):
        scene = caption_scene(caption)
        for name in left_out:
            named = getattr(scene, name) in text.split()
            column = COLUMNS.index(name)
            assert int(want[column]) == (int(key[column]) if named else ANY), (text, name)
            left_out[name] += not named
        for name in ("caption", "colour", "shape", "motion", "then"):  # always named
            assert want[COLUMNS.index(name)] == key[COLUMNS.index(name)]
        assert all(motion in text for motion in scene.events)
    assert all(60 <= count <= 140 for count in left_out.values()), left_out  # each left out about half the time


def test_a_short_caption_counts_every_clip_with_its_attributes_as_a_match():
    clips = [
        Scene("red", "circle", "moves to the right", None, "small", "slowly", "black"),
        Scene("red", "circle", "moves to the right", None, "large", "quickly", "gray"),  # same, other extras
        Scene("blue", "circle", "moves to the right", None, "small", "slowly", "black"),  # other colour
        Scene("red", "circle", "moves to the right", "moves up", "small", "slowly", "black"),  # two motions
    ]
    captions = [scene.caption for scene in clips]
    keys = clip_keys(captions)
    wants = keys.clone()
    for column in ("size", "speed", "background"):  # caption 0 becomes "a red circle moves to the right"
        wants[0, COLUMNS.index(column)] = ANY
    torch.manual_seed(0)
    video, text = torch.randn(4, 8), torch.randn(4, 8)
    scale = torch.tensor(10.0)
    logits = scale * F.normalize(text, dim=-1) @ F.normalize(video, dim=-1).T
    p, q = logits.softmax(1), logits.softmax(0)
    t2v = -torch.log(torch.stack([p[0, 0] + p[0, 1], p[1, 1], p[2, 2], p[3, 3]])).mean()
    v2t = -torch.log(torch.stack([q[0, 0], q[0, 1] + q[1, 1], q[2, 2], q[3, 3]])).mean()
    expected = float(0.5 * (t2v + v2t))
    assert float(symmetric_infonce(video, text, scale, keys, wants)) == pytest.approx(expected, rel=1e-5)
    # full captions: only the clip each was written for
    assert float(symmetric_infonce(video, text, scale, keys, keys)) == pytest.approx(
        float(symmetric_infonce(video, text, scale)), rel=1e-6
    )


def test_other_captions_match_only_clips_bearing_the_same_caption():
    captions = ["a person is cooking", "a dog runs", "a person is cooking", draw_scenes(1, 0)[0].caption]
    keys = clip_keys(captions)
    torch.manual_seed(1)
    video, text = torch.randn(4, 8), torch.randn(4, 8)
    scale = torch.tensor(10.0)
    by_equality = symmetric_infonce(video, text, scale, caption_labels(captions))
    assert float(symmetric_infonce(video, text, scale, keys, keys)) == pytest.approx(float(by_equality), rel=1e-6)


def test_extra_queries_are_shortened_captions_each_drawn_once():
    captions = [scene.caption for scene in draw_scenes(64, 5)]
    keys = clip_keys(captions)
    queries, wants = shortened_queries(captions, keys, 64, np.random.default_rng(0))
    assert len(queries) == len(wants) == 64
    described = (wants[:, None, :] == keys[None, :, :]) | (wants[:, None, :] == ANY)
    assert described.all(-1).any(0).all()  # every caption was drawn (drawn with replacement, about 40 would be)
    for name in ("colour", "shape", "motion", "then"):  # always named
        assert (wants[:, COLUMNS.index(name)] >= 0).all()
    assert sum(query not in captions for query in queries) >= 48  # about 7 in 8 leave something out


def test_an_extra_query_trains_text_to_video_against_every_clip_it_describes():
    clips = [
        Scene("red", "circle", "moves to the right", None, "small", "slowly", "black"),
        Scene("red", "circle", "moves to the right", None, "large", "quickly", "gray"),
        Scene("blue", "circle", "moves to the right", None, "small", "slowly", "black"),
    ]
    keys = clip_keys([scene.caption for scene in clips])
    wants = keys[:1].clone()
    for column in ("size", "speed", "background"):  # "a red circle moves to the right"
        wants[0, COLUMNS.index(column)] = ANY
    torch.manual_seed(2)
    video, query = torch.randn(3, 8), torch.randn(1, 8)
    scale = torch.tensor(10.0)
    p = (scale * F.normalize(query, dim=-1) @ F.normalize(video, dim=-1).T).softmax(1)
    assert float(query_loss(video, query, scale, keys, wants)) == pytest.approx(float(-torch.log(p[0, 0] + p[0, 1])))
    only_first = query_loss(video, query, scale, keys, keys[:1])  # the full caption: its own clip alone
    assert float(only_first) == pytest.approx(float(-torch.log(p[0, 0])), rel=1e-5)


def test_extra_queries_train_the_text_tower_and_leave_the_clips_alone():
    captions = [scene.caption for scene in draw_scenes(8, 6)]
    keys = clip_keys(captions)
    queries, wants = shortened_queries(captions, keys, 4, np.random.default_rng(1))
    torch.manual_seed(3)
    video, text, query = (torch.randn(n, 8, requires_grad=True) for n in (8, 8, 4))
    cfg, scale = TrainConfig(), torch.tensor(10.0)
    plain = torch.autograd.grad(pair_loss(video, text, scale, keys, keys, None, cfg), video)[0]
    with_queries = pair_loss(video, text, scale, keys, keys, None, cfg, queries=(query, wants))
    by_video, by_query = torch.autograd.grad(with_queries, (video, query))
    assert torch.equal(by_video, plain)  # the clips learn from full captions only
    assert by_query.abs().sum() > 0
