"""Loading and saving: project checkpoints, reference-format files, open_clip backbone files, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import random_frames, randomise_adapter
from safetensors.torch import save_file
from typer.testing import CliRunner

from model import CheckpointError, ConfigError, create_model, get_config, load_encoder, load_model, save_checkpoint


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_full_checkpoint_round_trips_bit_exactly(trained_tiny_model, tmp_path):
    path = save_checkpoint(trained_tiny_model, tmp_path / "ckpt")
    assert path.name == "model.safetensors" and (tmp_path / "ckpt" / "config.json").is_file()
    loaded = load_model(str(tmp_path / "ckpt"))
    _assert_same_state(loaded.state_dict(), trained_tiny_model.state_dict())
    assert loaded.config.method == trained_tiny_model.config.method
    a, b = load_encoder(str(tmp_path / "ckpt")), load_encoder(str(path))
    assert a.checkpoint_id == b.checkpoint_id == trained_tiny_model.weights_digest()
    frames = random_frames(batch=2)
    assert torch.equal(a.encode_video(frames), b.encode_video(frames))


def test_half_precision_checkpoint_loads_into_float32(trained_tiny_model, tmp_path):
    path = save_checkpoint(trained_tiny_model, tmp_path / "half.safetensors", dtype=torch.float16)
    loaded = load_model(str(path))
    for name, tensor in loaded.state_dict().items():
        want = trained_tiny_model.state_dict()[name]
        assert tensor.dtype == want.dtype
        torch.testing.assert_close(tensor, want.half().to(want.dtype), rtol=0, atol=0, msg=name)


def test_checkpoint_id_names_the_weights(trained_tiny_model, tmp_path):
    save_checkpoint(trained_tiny_model, tmp_path / "a.safetensors")
    with torch.no_grad():
        trained_tiny_model.prompts[0, 0] += 1.0
    save_checkpoint(trained_tiny_model, tmp_path / "b.safetensors")
    assert (
        load_encoder(str(tmp_path / "a.safetensors")).checkpoint_id
        != load_encoder(str(tmp_path / "b.safetensors")).checkpoint_id
    )


def test_adapter_checkpoint_holds_only_the_adapter_and_finds_its_backbone(trained_tiny_model, tmp_path):
    weights = tmp_path / "backbone.pt"
    torch.save(trained_tiny_model.clip.state_dict(), weights)
    config = get_config("tiny")
    config.backbone.pretrained = str(weights)
    model = randomise_adapter(create_model(config), seed=1)
    path = save_checkpoint(model, tmp_path / "adapter.safetensors")
    assert path.stat().st_size < weights.stat().st_size / 5
    loaded = load_model(str(path))
    _assert_same_state(loaded.state_dict(), model.state_dict())

    # The backbone file moved: point at it; a different file is refused by its hash.
    moved = tmp_path / "moved.pt"
    weights.rename(moved)
    with pytest.raises(CheckpointError, match="backbone_weights"):
        load_model(str(path))
    _assert_same_state(load_model(str(path), backbone_weights=str(moved)).state_dict(), model.state_dict())
    other = tmp_path / "other.pt"
    torch.save(create_model("tiny").clip.state_dict(), other)
    with pytest.raises(CheckpointError, match="sha256"):
        load_model(str(path), backbone_weights=str(other))


def _reference_state_dict(width=64, layers=12, text_width=64, text_layers=2, patch=16, image=64, embed=32, g=8):
    """A state dict with docs/METHOD.md section 8's key names and shapes, random values."""
    gen = torch.Generator().manual_seed(3)

    def r(*shape):
        return torch.randn(*shape, generator=gen).half() * 0.05

    grid = image // patch
    sd = {
        "clip.positional_embedding": r(77, text_width),
        "clip.text_projection": r(text_width, embed),
        "clip.logit_scale": torch.tensor(4.6052).half(),
        "clip.token_embedding.weight": r(49408, text_width),
        "clip.ln_final.weight": 1 + r(text_width),
        "clip.ln_final.bias": r(text_width),
        "clip.visual.class_embedding": r(width),
        "clip.visual.positional_embedding": r(grid * grid + 1, width),
        "clip.visual.proj": r(width, embed),
        "clip.visual.conv1.weight": r(width, 3, patch, patch),
        "clip.visual.ln_pre.weight": 1 + r(width),
        "clip.visual.ln_pre.bias": r(width),
        "clip.visual.ln_post.weight": 1 + r(width),
        "clip.visual.ln_post.bias": r(width),
        "clip.visual.prompt_embeddings": r(1, g, width),
        "clip.visual.frame_positional_embedding.weight": r(12, width),
    }
    for prefix, w, n in (("clip.visual.transformer", width, layers), ("clip.transformer", text_width, text_layers)):
        for i in range(n):
            p = f"{prefix}.resblocks.{i}"
            sd |= {
                f"{p}.attn.in_proj_weight": r(3 * w, w),
                f"{p}.attn.in_proj_bias": r(3 * w),
                f"{p}.attn.out_proj.weight": r(w, w),
                f"{p}.attn.out_proj.bias": r(w),
                f"{p}.attn.TVPt_LoRA_a": r(8, w),
                f"{p}.attn.TVPt_LoRA_b": r(3 * w, 8),
                f"{p}.ln_1.weight": 1 + r(w),
                f"{p}.ln_1.bias": r(w),
                f"{p}.ln_2.weight": 1 + r(w),
                f"{p}.ln_2.bias": r(w),
                f"{p}.mlp.c_fc.weight": r(4 * w, w),
                f"{p}.mlp.c_fc.bias": r(4 * w),
                f"{p}.mlp.c_proj.weight": r(w, 4 * w),
                f"{p}.mlp.c_proj.bias": r(w),
            }
    return sd


def test_reference_format_checkpoint_loads_by_itself_and_encodes(tmp_path):
    sd = _reference_state_dict()
    path = tmp_path / "pytorch_model.bin.4"  # the reference's own file naming
    torch.save(sd, path)
    model = load_model(str(path))
    assert torch.equal(model.visual_lora[3].a, sd["clip.visual.transformer.resblocks.3.attn.TVPt_LoRA_a"].float())
    assert torch.equal(model.text_lora[1].b, sd["clip.transformer.resblocks.1.attn.TVPt_LoRA_b"].float())
    assert torch.equal(model.prompts, sd["clip.visual.prompt_embeddings"][0].float())
    assert model.config.method.sel_drop == 3  # the paper's 10 of 49 patches, scaled to 16
    enc = load_encoder(str(path))
    video = enc.encode_video(random_frames(batch=2))
    text = enc.encode_text(["a red circle", "a blue square"])
    assert video.shape == text.shape == (2, 32)
    torch.testing.assert_close(video.norm(dim=-1), torch.ones(2))


def _zero_shot_expectation(source_model, frames):
    with torch.no_grad():
        per_frame = source_model.clip.encode_image(frames.flatten(0, 1)).view(frames.shape[0], 12, -1)
    return torch.nn.functional.normalize(per_frame.mean(1), dim=-1)


@pytest.mark.parametrize("fmt", ["torchscript", "open_clip", "safetensors"])
def test_local_backbone_weights_load_for_zero_shot_search(tiny_model, tmp_path, fmt):
    clip = tiny_model.clip
    frames = random_frames(batch=2)
    if fmt == "torchscript":  # OpenAI's files are TorchScript archives
        path = tmp_path / "ViT-tiny.pt"
        traced = torch.jit.trace(clip, (frames[0, :2], torch.zeros(2, 77, dtype=torch.long)), check_trace=False)
        traced.save(str(path))
    elif fmt == "open_clip":  # open_clip training checkpoints: {"state_dict": {"module." + key: ...}}
        path = tmp_path / "epoch_10.pt"
        torch.save({"epoch": 10, "state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}}, path)
    else:
        path = tmp_path / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    enc = load_encoder(f"openclip:tiny/{path}")
    assert enc.config.method.zero_shot
    torch.testing.assert_close(enc.encode_video(frames), _zero_shot_expectation(tiny_model, frames), atol=1e-5, rtol=0)


def test_bad_frames_are_refused_with_what_was_expected(trained_tiny_model, tmp_path):
    save_checkpoint(trained_tiny_model, tmp_path / "c")
    enc = load_encoder(str(tmp_path / "c"))
    with pytest.raises(ValueError, match="exactly 12 frames"):
        enc.encode_video(torch.zeros(1, 8, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\[B, 12, 3, 64, 64\]"):
        enc.encode_video(torch.zeros(1, 12, 3, 32, 32))
    with pytest.raises(ValueError, match="preprocess"):
        enc.encode_video(torch.zeros(1, 12, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(TypeError):
        enc.encode_text("not a list")
    with pytest.raises(ValueError, match="uint8"):
        enc.preprocess(np.zeros((12, 80, 100, 3), np.float32))


def test_preprocess_resizes_crops_and_normalises(trained_tiny_model, tmp_path):
    save_checkpoint(trained_tiny_model, tmp_path / "c")
    enc = load_encoder(str(tmp_path / "c"))
    frames = np.zeros((12, 90, 160, 3), np.uint8)
    frames[..., 0] = 255
    x = enc.preprocess(frames)
    assert x.shape == (12, 3, 64, 64) and x.dtype == torch.float32
    torch.testing.assert_close(x[:, 0].mean(), torch.tensor((1 - 0.48145466) / 0.26862954), atol=1e-4, rtol=0)
    assert enc.encode_video(x[None]).shape == (1, 64)


def test_unknown_names_and_corrupt_files_raise_clear_errors(trained_tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="unknown encoder config 'no-such-config'.*tiny"):
        get_config("no-such-config")
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(str(tmp_path / "missing"))
    path = save_checkpoint(trained_tiny_model, tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.safetensors.*corrupt or truncated"):
        load_encoder(str(truncated))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 100)
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_encoder(str(garbage))
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a tvr checkpoint"):
        load_encoder(str(foreign))
    not_reference = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, not_reference)
    with pytest.raises(CheckpointError, match="neither a tvr checkpoint nor a reference"):
        load_encoder(str(not_reference))
    with pytest.raises(ConfigError, match="openclip:ARCH/TAG"):
        load_encoder("openclip:ViT-B-32")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder("openclip:ViT-B-32/no/such/file.pt")


def test_config_files_are_valid_and_listed():
    from model import list_configs

    names = list_configs()
    assert {"tiny", "ViT-B-32", "ViT-B-16", "ViT-L-14"} <= set(names)
    b32 = get_config("ViT-B-32")
    assert b32.backbone.arch == "ViT-B-32" and b32.method.sel_drop == 10 and b32.method.merge_units == [6, 3, 1]
    assert json.loads(b32.to_json())["method"]["sel_layer"] == 6


def test_cli_help_and_version():
    from tvr_cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("tvr ")
    assert runner.invoke(app, ["--help"]).exit_code == 0


def test_packaged_names_win_over_a_folder_of_that_name_in_the_working_directory(tmp_path, monkeypatch):
    from model import list_packaged

    assert "demo" in list_packaged()
    packaged_id = load_model("demo").weights_digest()
    local = tmp_path / "demo"
    local.mkdir()
    (local / "model.safetensors").write_bytes(b"junk, not a checkpoint" * 10)
    monkeypatch.chdir(tmp_path)
    assert load_model("demo").weights_digest() == packaged_id
    with pytest.raises(CheckpointError, match=r"demo/model\.safetensors"):
        load_model("./demo")
    (local / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"'\./demo' is a folder without model\.safetensors"):
        load_model("./demo")
    with pytest.raises(CheckpointError, match=r"'demo-missing' not found: expected .*packaged name \(demo"):
        load_model("demo-missing")


def test_a_bare_name_that_is_not_packaged_is_a_file_in_the_working_directory(trained_tiny_model, tmp_path, monkeypatch):
    save_checkpoint(trained_tiny_model, tmp_path / "model.safetensors")
    save_checkpoint(trained_tiny_model, tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    digest = trained_tiny_model.weights_digest()
    assert load_model("model.safetensors").weights_digest() == digest
    assert load_model("mine").weights_digest() == digest
    assert load_model(str(tmp_path / "mine")).weights_digest() == digest


def test_encoders_satisfy_the_protocol_the_indexer_and_service_use():
    from model import VideoTextEncoder

    encoder = load_encoder("demo")
    assert isinstance(encoder, VideoTextEncoder)
    assert (encoder.num_frames, encoder.image_size, encoder.embed_dim) == (8, 64, 64)  # packaged demo: 8 frames
    assert encoder.device == torch.device("cpu") and encoder.legacy_checkpoint_ids == ()
