"""The dual-attention method, checked piece by piece against independent computations on the tiny config."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import random_frames, randomise_adapter
from torch import nn

from model import create_model, tokenize
from model.video_tower import (
    VideoTokens,
    dual_attention_block,
    embed_frames,
    merge_layout,
    merge_units,
    select_patches,
)


def _no_selection_no_merging(model):
    model.config.method.sel_layer = None
    model.config.method.merge_layers, model.config.method.merge_units = [], []
    return model


@torch.no_grad()
def test_untrained_adapter_reproduces_open_clip_per_frame_embeddings(tiny_model):
    model = _no_selection_no_merging(tiny_model)
    frames = random_frames(batch=2)
    _, per_frame = model.encode_video(frames, return_frames=True)
    expected = model.clip.encode_image(frames.flatten(0, 1)).view(2, 12, -1)
    torch.testing.assert_close(per_frame, expected, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_zero_shot_mode_is_the_mean_of_open_clip_frame_embeddings(tiny_model):
    zero_shot = copy.deepcopy(tiny_model)
    zero_shot.config = copy.deepcopy(tiny_model.config)
    zero_shot.config.method.zero_shot = True
    zero_shot.prompts = None
    frames = random_frames(batch=2)
    video, _ = zero_shot.encode_video(frames)
    expected = tiny_model.clip.encode_image(frames.flatten(0, 1)).view(2, 12, -1).mean(1)
    torch.testing.assert_close(video, expected, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_untrained_text_tower_equals_open_clip_text_encoder(tiny_model):
    texts = ["a red circle moves to the right", "two dogs"]
    ids = tokenize(texts, 32)
    ours = tiny_model.encode_text(ids)
    theirs = tiny_model.clip.encode_text(tokenize(texts, 77))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_folded_lora_gives_the_same_embeddings(trained_tiny_model):
    frames, ids = random_frames(), tokenize(["a blue square moves up"], 32)
    video, text = trained_tiny_model(frames, ids)
    folded = copy.deepcopy(trained_tiny_model)
    folded.fold_lora()
    video2, text2 = folded(frames, ids)
    torch.testing.assert_close(video2, video, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(text2, text, atol=1e-5, rtol=1e-4)
    # and LoRA really changes the result (B is non-zero here)
    plain = copy.deepcopy(trained_tiny_model)
    plain.visual_lora = plain.text_lora = None
    assert not torch.allclose(plain(frames, ids)[0], video, atol=1e-3)


def _independent_selection_scores(block: nn.Module, lora, tokens: VideoTokens) -> torch.Tensor:
    """alpha-weighted attention scores (B, T, N) computed with torch's own MultiheadAttention."""
    attn = block.attn
    mha = nn.MultiheadAttention(attn.embed_dim, attn.num_heads, batch_first=True)
    mha.load_state_dict(attn.state_dict())
    with torch.no_grad():
        mha.in_proj_weight += lora.b @ lora.a
    u = block.ln_1(tokens.x)
    b, g, t, m = u.shape[0], tokens.num_global, tokens.num_units, tokens.unit_len
    frames = u[:, g:].reshape(b * t, m, -1)
    _, local = mha(frames, frames, frames, need_weights=True, average_attn_weights=True)  # (B*T, M, M)
    _, glob = mha(u[:, :1], u, u, need_weights=True, average_attn_weights=True)  # (B, 1, L)
    a_loc = local[:, 0, 1:].reshape(b, t, m - 1)
    a_glob = glob[:, 0, g:].reshape(b, t, m)[:, :, 1:]
    return 0.4 * a_glob + 0.6 * a_loc


@torch.no_grad()
def test_selection_keeps_the_highest_scoring_patches_of_every_frame(trained_tiny_model):
    model = trained_tiny_model
    visual, method = model.clip.visual, model.config.method
    tokens = embed_frames(visual, random_frames(batch=2), model.prompts, None)
    for i in range(method.sel_layer - 1):
        dual_attention_block(visual.transformer.resblocks[i], model.visual_lora[i], tokens)
    last = method.sel_layer - 1
    before_last = VideoTokens(**{**tokens.__dict__, "x": tokens.x.clone()})
    expected_scores = _independent_selection_scores(
        visual.transformer.resblocks[last], model.visual_lora[last], before_last
    )
    scores = dual_attention_block(visual.transformer.resblocks[last], model.visual_lora[last], tokens, True)
    torch.testing.assert_close(scores.global_to_patch * 0.4 + scores.cls_to_patch * 0.6, expected_scores)

    units_before = tokens.units.clone()  # (B, T, 1+N, D)
    select_patches(tokens, scores, method.sel_drop, method.sel_alpha)
    n = units_before.shape[2] - 1
    assert tokens.unit_len == 1 + n - method.sel_drop
    kept = tokens.units  # (B, T, 1+N-r, D)
    top = expected_scores.topk(n - method.sel_drop, dim=-1).indices + 1
    for b in range(2):
        for t in range(12):
            assert torch.equal(kept[b, t, 0], units_before[b, t, 0]), "the CLS token is always kept"
            got = {tuple(row.tolist()) for row in kept[b, t, 1:]}
            want = {tuple(units_before[b, t, p].tolist()) for p in top[b, t]}
            assert got == want


def _frame_tagged_tokens(t: int = 12, m: int = 3, g: int = 2, order: list[int] | None = None) -> VideoTokens:
    x = torch.full((1, g + t * m, 1), -1.0)
    frames = torch.tensor(order if order is not None else range(t))
    x[0, g:, 0] = frames.repeat_interleave(m).float()  # every token carries its frame index
    return VideoTokens(x=x, num_global=g, num_units=t, unit_len=m, frames_per_unit=1)


def _unit_frames(tokens: VideoTokens) -> list[set[int]]:
    return [set(unit[:, 0].long().tolist()) for unit in tokens.units[0]]


def _unit_sequences(tokens: VideoTokens) -> list[tuple[int, ...]]:
    """Each unit's frames in token order, one entry per frame."""
    m = tokens.unit_len // tokens.frames_per_unit
    return [tuple(unit[::m, 0].long().tolist()) for unit in tokens.units[0]]


def test_strided_merging_groups_the_frames_method_md_names():
    tokens = _frame_tagged_tokens()
    merge_units(tokens, 6)
    assert _unit_frames(tokens) == [{j, j + 6} for j in range(6)]
    merge_units(tokens, 3)
    assert _unit_frames(tokens) == [{k, k + 3, k + 6, k + 9} for k in range(3)]
    merge_units(tokens, 1)
    assert _unit_frames(tokens) == [set(range(12))]
    assert tokens.frames_per_unit == 12 and tokens.unit_len == 36
    assert torch.equal(tokens.x[0, :2, 0], torch.tensor([-1.0, -1.0])), "global tokens stay in front"


@pytest.mark.parametrize("grouping", ["strided", "contiguous"])
def test_frames_laid_out_for_the_merges_make_the_same_units_without_moving(grouping):
    order = merge_layout(12, [6, 3, 1], grouping)
    if grouping == "strided":
        assert order == [0, 6, 3, 9, 1, 7, 4, 10, 2, 8, 5, 11]
    else:
        assert order == list(range(12))
    plain, laid = _frame_tagged_tokens(), _frame_tagged_tokens(order=order)
    laid.laid_out_merges = (6, 3, 1)
    before = laid.x
    for s in (6, 3, 1):
        merge_units(plain, s, grouping)
        merge_units(laid, s, grouping)
        assert laid.x is before, "a laid-out merge moves nothing"
        # the same units, each with its frames in the same order; only where each unit sits differs
        assert sorted(_unit_sequences(laid)) == sorted(_unit_sequences(plain))
        assert (laid.num_units, laid.unit_len, laid.frames_per_unit) == (plain.num_units, plain.unit_len, 12 // s)
    assert laid.laid_out_merges == ()


def test_contiguous_merging_is_available_as_an_option():
    tokens = _frame_tagged_tokens()
    merge_units(tokens, 6, grouping="contiguous")
    assert _unit_frames(tokens) == [{2 * j, 2 * j + 1} for j in range(6)]


@torch.no_grad()
def test_text_padding_and_tokens_after_eot_do_not_change_the_embedding(trained_tiny_model):
    ids = tokenize(["a red circle moves to the right"], 32)
    alone = trained_tiny_model.encode_text(ids)
    noisy = ids.clone()
    eot = int(ids.argmax())
    noisy[0, eot + 1 :] = torch.randint(1, 49000, (32 - eot - 1,))
    torch.testing.assert_close(trained_tiny_model.encode_text(noisy), alone, atol=1e-6, rtol=1e-5)
    batch = tokenize(["a red circle moves to the right", "a much longer caption " * 5], 32)
    torch.testing.assert_close(trained_tiny_model.encode_text(batch)[:1], alone, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_reversed_video_embeds_identically_without_temporal_embedding(trained_tiny_model):
    frames = random_frames(batch=1)
    forward, _ = trained_tiny_model.encode_video(frames)
    backward, _ = trained_tiny_model.encode_video(frames.flip(1))
    torch.testing.assert_close(forward, backward, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_temporal_embedding_tells_a_video_from_its_reversal():
    torch.manual_seed(0)
    model = randomise_adapter(create_model("tiny", temporal_embedding=True).eval())
    assert model.temporal is not None and model.temporal.shape == (12, 64)
    model.temporal.normal_(std=0.5)  # a trained table is of the size of the positional embeddings
    frames = random_frames(batch=1)
    forward, _ = model.encode_video(frames)
    backward, _ = model.encode_video(frames.flip(1))
    assert F.cosine_similarity(forward, backward).item() < 0.99


def test_untrained_adapter_starts_at_zero_and_trains_only_the_adapter(tiny_model):
    assert all(float(lora.b.abs().max()) == 0.0 for lora in tiny_model.visual_lora)
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("visual_lora", "text_lora", "prompts")) for n in trainable)
    tiny_model.set_trainable(["all"])
    assert all(p.requires_grad for p in tiny_model.parameters())


def test_gradients_reach_lora_and_prompts(tiny_model):
    model = tiny_model.train()
    video, text = model(random_frames(batch=2), tokenize(["a", "b"], 32))
    (F.normalize(video, dim=-1) @ F.normalize(text, dim=-1).T).sum().backward()
    assert model.prompts.grad is not None and model.prompts.grad.abs().sum() > 0
    assert model.visual_lora[0].b.grad.abs().sum() > 0
    assert model.text_lora[0].b.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.clip.parameters())


@pytest.mark.parametrize("bad", [{"merge_units": [5, 3, 1]}, {"sel_layer": 9}, {"trainable": ["everything"]}])
def test_inconsistent_method_options_are_refused(bad):
    from model import ConfigError

    with pytest.raises(ConfigError):
        create_model("tiny", **bad)


@torch.no_grad()
def test_per_frame_embeddings_are_refused_clearly_once_frames_are_merged(tiny_model):
    with pytest.raises(ValueError, match="without segment merging"):
        tiny_model.encode_video(random_frames(batch=1), return_frames=True)
