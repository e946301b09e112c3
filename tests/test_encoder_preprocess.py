"""Frame preprocessing follows the backbone: open_clip's values for a pretrained tag, saved in checkpoints,
part of the checkpoint id only when they are not CLIP's."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import open_clip
import open_clip.factory
import open_clip.pretrained
import pytest
import torch
import torch.nn.functional as F
from conftest import randomise_adapter
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from model import ConfigError, create_model, get_config, load_encoder, load_model, save_checkpoint
from model import config as config_module
from model.preprocess import CLIP_MEAN, CLIP_STD, FramePreprocess, normalize_frames, preprocess_frames, resize_frames

ARCH = "tvr-test-tiny"  # the tiny architecture, registered with open_clip under a name
TAG = "half_stats"  # a pretrained tag of it whose statistics are not CLIP's
HALF = FramePreprocess(64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear", resize_mode="squash")
DEMO_ID = "27f43aa57af781cf"  # the shipped demo checkpoint's id: its weights digest (default preprocessing)
REFERENCE_ID = "b8bf570e913f7c7e"  # likewise for tests/data/reference-tiny/checkpoint.pth


@pytest.fixture
def half_stats_clip(tmp_path, monkeypatch):
    """The frozen CLIP behind ``openclip:ARCH/TAG``: random weights in a local file that the registered tag
    points at (open_clip reads a pretrained entry's ``file`` instead of downloading)."""
    arch = copy.deepcopy(get_config("tiny").backbone.arch)
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, ARCH, arch)
    torch.manual_seed(5)
    weights = tmp_path / "half_stats.pt"
    torch.save(open_clip.create_model(ARCH).state_dict(), weights)
    entry = {
        "file": str(weights),
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "interpolation": "bilinear",
        "resize_mode": "squash",
    }
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, ARCH, {TAG: entry})
    return open_clip.create_model(ARCH, pretrained=TAG).eval()


def _frames(size: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (12, size, size, 3), dtype=np.uint8)


def _per_frame_mean(clip, normalised: torch.Tensor) -> torch.Tensor:
    """What zero-shot search computes: the mean of the frozen image tower's per-frame embeddings."""
    with torch.no_grad():
        return F.normalize(clip.encode_image(normalised).mean(0, keepdim=True), dim=-1)


def test_a_pretrained_tag_brings_its_own_statistics(half_stats_clip):
    enc = load_encoder(f"openclip:{ARCH}/{TAG}")
    assert enc.preprocess == HALF
    frames = _frames()
    resized = enc.preprocess.resize(frames)
    assert torch.equal(resized, torch.from_numpy(frames).permute(0, 3, 1, 2))  # already 64x64: squash keeps it
    got = enc.encode_video(enc.preprocess(frames)[None])
    pixels = resized.float() / 255
    want = _per_frame_mean(half_stats_clip, (pixels - 0.5) / 0.5)
    clip_normalised = (pixels - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (got - _per_frame_mean(half_stats_clip, clip_normalised)).abs().max() > 1e-3


def test_a_saved_model_keeps_its_preprocessing_and_its_id_names_it(half_stats_clip, tmp_path, monkeypatch):
    tiny = get_config("tiny").to_dict()
    data = {"backbone": {"arch": ARCH, "pretrained": TAG, "quick_gelu": False}, "method": tiny["method"]}
    monkeypatch.setitem(config_module._extra_configs, "tvr-test-half", data)
    torch.manual_seed(0)
    model = randomise_adapter(create_model("tvr-test-half"))
    assert model.preprocess == HALF
    save_checkpoint(model, tmp_path / "ckpt")  # an adapter checkpoint: the backbone comes from the tag
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["preprocess"] == json.loads(
        json.dumps(HALF.to_dict())
    )
    enc = load_encoder(tmp_path / "ckpt")
    assert enc.preprocess == HALF and enc.model.config.preprocess == HALF
    assert enc.checkpoint_id == model.weights_digest()
    (legacy,) = enc.legacy_checkpoint_ids
    assert legacy != enc.checkpoint_id

    # The legacy id is the one these weights had before: what they give with CLIP's preprocessing, which
    # is also what a checkpoint written before preprocessing was recorded loads with.
    old = tmp_path / "old.safetensors"
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    config = json.loads(metadata["config"])
    del config["preprocess"]
    save_file(
        load_file(str(tmp_path / "ckpt" / "model.safetensors")), str(old), {**metadata, "config": json.dumps(config)}
    )
    before = load_encoder(old)
    assert before.preprocess == FramePreprocess(64)
    assert (before.checkpoint_id, before.legacy_checkpoint_ids) == (legacy, ())


def test_zero_shot_checkpoints_round_trip_the_tags_preprocessing(half_stats_clip, tmp_path):
    model = load_model(f"openclip:{ARCH}/{TAG}")
    save_checkpoint(model, tmp_path / "zero-shot")
    loaded = load_encoder(tmp_path / "zero-shot")
    assert loaded.preprocess == HALF
    assert loaded.checkpoint_id == load_encoder(f"openclip:{ARCH}/{TAG}").checkpoint_id == model.weights_digest()
    frames = _frames(seed=1)
    direct = load_encoder(f"openclip:{ARCH}/{TAG}")
    torch.testing.assert_close(
        loaded.encode_video(loaded.preprocess(frames)[None]), direct.encode_video(direct.preprocess(frames)[None])
    )


def test_clip_preprocessing_keeps_the_ids_checkpoints_always_had():
    demo = load_encoder("demo")
    assert demo.preprocess == FramePreprocess(64) and demo.preprocess.is_default()
    assert (demo.checkpoint_id, demo.legacy_checkpoint_ids) == (DEMO_ID, ())
    reference = load_encoder("tests/data/reference-tiny/checkpoint.pth")
    assert (reference.checkpoint_id, reference.legacy_checkpoint_ids) == (REFERENCE_ID, ())


def test_local_weights_files_keep_clip_preprocessing(tiny_model, tmp_path):
    weights = tmp_path / "clip.pt"
    torch.save(tiny_model.clip.state_dict(), weights)
    assert load_encoder(f"openclip:tiny/{weights}").preprocess == FramePreprocess(64)


def test_the_default_is_clip_preprocessing_as_before():
    frames = np.random.default_rng(2).integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)
    default = FramePreprocess(64)
    assert default == FramePreprocess(64, CLIP_MEAN, CLIP_STD, "bicubic", "shortest")
    assert torch.equal(default.resize(frames), resize_frames(frames, 64))
    assert torch.equal(default(frames), preprocess_frames(frames, 64))
    assert torch.equal(default.normalize(default.resize(frames)), normalize_frames(resize_frames(frames, 64)))


@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("shape", [(50, 77), (120, 90)])
def test_frames_are_resized_as_open_clip_resizes_images(mode, interpolation, shape):
    image = np.random.default_rng(3).integers(0, 256, (*shape, 3), dtype=np.uint8)
    transform = open_clip.image_transform(
        64, is_train=False, mean=(0, 0, 0), std=(1, 1, 1), resize_mode=mode, interpolation=interpolation
    )
    want = transform(Image.fromarray(image)) * 255  # PIL resampling: within a level or so of torchvision's
    got = FramePreprocess(64, interpolation=interpolation, resize_mode=mode).resize(image[None])[0]
    assert got.shape == (3, 64, 64) and got.dtype == torch.uint8
    assert (got.float() - want).abs().mean() < 0.5


def test_longest_side_mode_pads_with_black():
    frames = np.full((1, 32, 64, 3), 255, np.uint8)  # wide: 64x32 after the resize, 16 rows of padding each side
    x = FramePreprocess(64, resize_mode="longest").resize(frames)[0]
    assert torch.all(x[:, :16] == 0) and torch.all(x[:, 48:] == 0) and torch.all(x[:, 16:48] == 255)
    squashed = FramePreprocess(64, resize_mode="squash").resize(frames)[0]
    assert torch.all(squashed == 255)


def test_open_clip_configs_become_frame_preprocessing():
    cfg = {"size": (224, 224), "mean": 0.5, "std": [0.5, 0.5, 0.5], "interpolation": "bilinear", "mode": "RGB"}
    assert FramePreprocess.from_open_clip(cfg, 224) == FramePreprocess(224, (0.5,) * 3, (0.5,) * 3, "bilinear")
    assert FramePreprocess.from_open_clip({"size": 224}, 224) == FramePreprocess(224)
    with pytest.raises(ConfigError, match="size 336 does not match the model's input size 224"):
        FramePreprocess.from_open_clip({"size": 336}, 224)
    laion = open_clip.get_pretrained_cfg("ViT-L-14", "laion2b_s32b_b82k")  # the registry entry, no download
    assert FramePreprocess.from_open_clip(laion, 224).mean == (0.5, 0.5, 0.5)


def test_bad_preprocessing_is_refused_with_what_was_expected():
    with pytest.raises(ConfigError, match="resize_mode must be one of shortest, longest, squash, got 'crop'"):
        FramePreprocess(64, resize_mode="crop")
    with pytest.raises(ConfigError, match="interpolation must be one of bicubic, bilinear, got 'nearest'"):
        FramePreprocess(64, interpolation="nearest")
    with pytest.raises(ConfigError, match=r"mean must have 3 values \(R, G, B\), got \[0.5, 0.5\]"):
        FramePreprocess(64, mean=(0.5, 0.5))
    with pytest.raises(ConfigError, match="std must be positive"):
        FramePreprocess(64, std=(0.5, 0.0, 0.5))
    config = get_config("tiny")
    config.preprocess = FramePreprocess(32)
    with pytest.raises(ConfigError, match="preprocess image_size 32 does not match the image tower's input size 64"):
        create_model(config)
    data = get_config("tiny").to_dict()
    data["preprocess"] = {"image_size": 64, "means": [0.5, 0.5, 0.5]}
    with pytest.raises(ConfigError, match="config 'custom-pp'.*means"):
        config_module.EncoderConfig.from_dict(data, "custom-pp")


def test_configs_round_trip_their_preprocessing():
    config = get_config("tiny")
    config.preprocess = dataclasses.replace(HALF)
    again = config_module.EncoderConfig.from_dict(json.loads(config.to_json()), "tiny")
    assert again.preprocess == HALF
    assert config_module.EncoderConfig.from_dict(get_config("tiny").to_dict()).preprocess is None
