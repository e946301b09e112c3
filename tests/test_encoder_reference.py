"""The acceptance test of the method: the paper's reference implementation's own outputs are reproduced."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model import load_encoder, load_model, tokenize

REFERENCE = Path(__file__).parent / "data" / "reference-tiny"


@pytest.fixture(scope="module")
def reference():
    meta = json.loads((REFERENCE / "meta.json").read_text())
    inputs = np.load(REFERENCE / "inputs.npz")
    expected = np.load(REFERENCE / "expected.npz")
    return meta, inputs, expected


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(str(REFERENCE / "checkpoint.pth"))


def test_reference_checkpoint_reproduces_reference_embeddings(reference, encoder):
    meta, inputs, expected = reference
    video = encoder.encode_video(torch.from_numpy(inputs["frames"]))
    text = encoder.encode_text(meta["captions"])
    want_video = F.normalize(torch.from_numpy(expected["video"]), dim=-1)
    want_text = F.normalize(torch.from_numpy(expected["text"]), dim=-1)
    assert (video * want_video).sum(-1).min() >= 0.9999
    assert (text * want_text).sum(-1).min() >= 0.9999
    # Tighter than the acceptance bar: a near miss (e.g. contiguous instead of strided merging) gives 4e-3.
    assert (video - want_video).norm(dim=-1).max() < 1e-4
    assert (text - want_text).norm(dim=-1).max() < 1e-4


def test_tokenizer_matches_reference_token_ids(reference):
    meta, inputs, _ = reference
    ids = tokenize(meta["captions"], 32).numpy()
    np.testing.assert_array_equal(ids, inputs["token_ids"])
    np.testing.assert_array_equal(ids != 0, inputs["token_mask"].astype(bool))


def test_reference_hyperparameters_are_read_from_the_run_arguments(reference, encoder):
    meta, _, _ = reference
    hp = meta["hyperparameters"]
    method = encoder.config.method
    assert method.sel_drop == hp["r"] == 4
    assert method.sel_layer == int(hp["sel_layer"])
    assert method.merge_layers == [int(x) for x in hp["seg_layer"].split("-")]
    assert method.merge_units == [int(x) for x in hp["seg_num"].split("-")]
    assert method.num_prompts == hp["global_visual_prompt_length"]
    assert method.lora_rank == hp["lora_dim"]


def test_patch_selection_matters_for_the_reference_result(reference):
    """Without selection the embeddings move far beyond the tolerance: the test above can fail."""
    _, inputs, expected = reference
    enc = load_encoder(str(REFERENCE / "checkpoint.pth"), sel_layer=None)
    video = enc.encode_video(torch.from_numpy(inputs["frames"]))
    want = F.normalize(torch.from_numpy(expected["video"]), dim=-1)
    assert (video - want).norm(dim=-1).max() > 0.05


def test_reference_architecture_follows_from_shapes(reference):
    meta, _, _ = reference
    arch = meta["architecture"]
    model = load_model(str(REFERENCE / "checkpoint.pth"))
    visual = model.clip.visual
    assert visual.conv1.out_channels == arch["vision_width"]
    assert visual.conv1.kernel_size[0] == arch["patch_size"]
    assert visual.image_size[0] == arch["image_size"]
    assert len(visual.transformer.resblocks) == arch["vision_layers"]
    assert visual.transformer.resblocks[0].attn.num_heads == arch["vision_heads"]
    assert model.clip.transformer.resblocks[0].attn.num_heads == arch["text_heads"]
    assert len(model.clip.transformer.resblocks) == arch["text_layers"]
    assert visual.proj.shape[1] == arch["embed_dim"]
