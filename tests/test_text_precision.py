"""Query encoding at reduced precision: the compact text tower agrees with the model's own, and a text's
embedding does not depend on the texts encoded beside it."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import randomise_adapter

from model import Encoder, create_model, get_config, load_encoder, save_checkpoint
from model.text_inference import TEXT_PRECISIONS, RowInt8Linear, compact_text_tower

QUERIES = [
    "a red circle moves to the right",
    "a small blue square slowly moves up, then moves down, on a gray background",
    "two people walk a dog in the park",
    "x",
]


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = randomise_adapter(create_model("tiny").eval())  # LoRA non-zero: folding must reach the copy
    save_checkpoint(model, tmp_path / "ckpt")
    return tmp_path / "ckpt"


def test_float32_compact_tower_equals_the_model_tower(checkpoint):
    encoder = load_encoder(checkpoint)
    exact = encoder.encode_text(QUERIES)
    tower = compact_text_tower(encoder.model.clip, "float32", torch.device("cpu"))
    from model.text_tower import tokenize

    with torch.inference_mode():
        copy = torch.nn.functional.normalize(tower(tokenize(QUERIES, encoder.config.method.max_words)), dim=-1)
    torch.testing.assert_close(copy, exact, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("precision", "min_cosine"), [("bfloat16", 0.999), ("int8", 0.99)])
def test_reduced_precision_queries_stay_close_and_keep_the_checkpoint_id(checkpoint, precision, min_cosine):
    exact = load_encoder(checkpoint)
    fast = load_encoder(checkpoint, text_precision=precision)
    assert fast.checkpoint_id == exact.checkpoint_id  # precision is a serving choice: the index still matches
    a, b = exact.encode_text(QUERIES), fast.encode_text(QUERIES)
    assert b.dtype == torch.float32 and b.shape == a.shape
    torch.testing.assert_close(b.norm(dim=-1), torch.ones(len(QUERIES)))
    cosine = (a * b).sum(-1)
    assert cosine.min() > min_cosine, cosine
    assert cosine.min() < 1 - 1e-7  # it really is another computation
    # the ranking of queries against each other survives (what a search depends on)
    assert torch.equal((b @ b.T).argsort(dim=1), (a @ a.T).argsort(dim=1))
    if precision == "int8":
        assert any(isinstance(m, RowInt8Linear) for m in fast._text_tower.modules())


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "int8"])
def test_traced_blocks_compute_what_the_eager_ones_do_at_any_batch_and_length(checkpoint, precision):
    clip = load_encoder(checkpoint).model.clip
    traced = compact_text_tower(clip, precision, torch.device("cpu"))
    eager = compact_text_tower(clip, precision, torch.device("cpu"), trace=False)
    assert isinstance(traced.blocks, torch.jit.ScriptModule) and not isinstance(eager.blocks, torch.jit.ScriptModule)
    width = clip.positional_embedding.shape[1]
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
    for batch, length in [(1, 3), (3, 11), (2, 8), (5, 1)]:  # the trace was made at (1, 8)
        x = torch.randn(batch, length, width).to(dtype)
        with torch.inference_mode():
            torch.testing.assert_close(traced.blocks(x), eager.blocks(x), atol=1e-5, rtol=1e-5)


def test_unknown_precision_and_int8_off_cpu_are_refused(checkpoint):
    with pytest.raises(ValueError, match="text precision must be one of"):
        load_encoder(checkpoint, text_precision="int4")
    encoder = load_encoder(checkpoint)
    with pytest.raises(ValueError, match="int8 text precision runs on the CPU only"):
        compact_text_tower(encoder.model.clip, "int8", torch.device("meta"))


SCENES = itertools.product(("red", "green", "blue"), ("circle", "square"), ("up", "down", "left", "up"))
NEIGHBOURS = {
    "short": ["x", "a dog", "red"],
    "long": [
        "a small blue square slowly moves up and then down on a gray background while a large red circle "
        "moves to the left and a green triangle spins in the corner of the frame"  # longer than max_words
    ],
    "many": [f"clip {i}: a {colour} {shape} moves {way}" for i, (colour, shape, way) in enumerate(SCENES)],
}


def _assert_independent_of_neighbours(encoder: Encoder, seed: int = 0) -> None:
    """Each query alone and in batches before and after other texts: the same embedding (1e-5 per
    component) and the same top 10 among fixed vectors."""
    generator = torch.Generator().manual_seed(seed)
    bank = torch.nn.functional.normalize(torch.randn(500, encoder.embed_dim, generator=generator), dim=-1)
    for text in QUERIES:
        alone = encoder.encode_text([text])[0]
        for name, others in NEIGHBOURS.items():
            for batch in ([text, *others], [*others, text], [*others[:1], text, *others[1:]]):
                got = encoder.encode_text(batch)[batch.index(text)]
                difference = (got - alone).abs().max().item()
                assert difference <= 1e-5, (encoder.text_precision, text, name, difference)
                assert torch.equal((bank @ got).topk(10).indices, (bank @ alone).topk(10).indices)


@pytest.mark.parametrize("precision", TEXT_PRECISIONS)
def test_a_text_embeds_the_same_whatever_is_encoded_beside_it(checkpoint, precision):
    _assert_independent_of_neighbours(load_encoder(checkpoint, text_precision=precision))


@pytest.mark.slow
@pytest.mark.parametrize("precision", TEXT_PRECISIONS)
def test_neighbour_independence_holds_at_vit_b_32_sizes(precision):
    """The kernels of a real-sized text tower (width 512, 12 blocks; random weights) take other paths than
    the tiny one's."""
    config = get_config("ViT-B-32")
    config.backbone.pretrained = None
    torch.manual_seed(0)
    model = create_model(config).eval()
    _assert_independent_of_neighbours(Encoder(model, "b32", text_precision=precision))
