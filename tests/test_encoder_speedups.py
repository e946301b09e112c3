"""The encoder's speed-ups compute what the plain method computes: fused attention, bfloat16 products under
autocast, and the CUDA-graph path's batching (run here with an eager stand-in for the graph)."""

from __future__ import annotations

import copy
from collections import Counter

import torch
import torch.nn.functional as F
from conftest import random_frames, randomise_adapter
from torch.utils._python_dispatch import TorchDispatchMode

from model import Encoder, create_model
from model.encoder import BatchGraphs, eager_capture
from model.video_tower import VideoTokens, dual_attention_block, embed_frames

# aten operations that multiply matrices (what autocast should run in bfloat16)
PRODUCTS = {
    "mm",
    "addmm",
    "bmm",
    "baddbmm",
    "convolution",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
}


class ProductDtypes(TorchDispatchMode):
    """Records (operation, dtypes of its tensor arguments) for every matrix product that runs."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[tuple[str, tuple[torch.dtype, ...]]] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name in PRODUCTS:
            self.seen[(name, tuple(a.dtype for a in args if isinstance(a, torch.Tensor)))] += 1
        return func(*args, **(kwargs or {}))


def _folded_encoder(seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(randomise_adapter(create_model("tiny").eval()), "test", "cpu")


def _reference_block(block, tokens: VideoTokens) -> torch.Tensor:
    """One dual-attention block written out with explicit probabilities (docs/METHOD.md section 3, step 2)."""
    attn, x = block.attn, tokens.x
    b, length, d = x.shape
    g, u, m, h = tokens.num_global, tokens.num_units, tokens.unit_len, attn.num_heads
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    out = torch.empty_like(x)
    scale = (d // h) ** -0.5

    def attend(qs: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor) -> torch.Tensor:  # (n, D) each
        qh, kh, vh = (t.view(t.shape[0], h, d // h).transpose(0, 1) for t in (qs, ks, vs))
        return (torch.softmax(qh @ kh.transpose(1, 2) * scale, dim=-1) @ vh).transpose(0, 1).reshape(-1, d)

    for i in range(b):
        out[i, :g] = attend(q[i, :g], k[i], v[i])
        for j in range(u):
            rows = slice(g + j * m, g + (j + 1) * m)
            out[i, rows] = attend(q[i, rows], k[i, rows], v[i, rows])
    x = x + attn.out_proj(out)
    return x + block.mlp(block.ln_2(x))


@torch.no_grad()
def test_fused_block_equals_the_block_written_out():
    encoder = _folded_encoder()
    visual = encoder.model.clip.visual
    tokens = embed_frames(visual, random_frames(batch=2), encoder.model.prompts, None)
    for i, block in enumerate(visual.transformer.resblocks[:3]):
        want = _reference_block(block, tokens)
        scores = dual_attention_block(block, None, tokens, want_scores=i == 2)
        torch.testing.assert_close(tokens.x, want, atol=2e-5, rtol=1e-5)
    assert scores is not None and scores.global_to_patch.shape == scores.cls_to_patch.shape == (2, 12, 16)
    assert torch.all(scores.cls_to_patch > 0) and torch.all(scores.cls_to_patch.sum(-1) < 1)


@torch.no_grad()
def test_every_matrix_product_runs_in_bfloat16_under_autocast():
    """No float32 GEMM under autocast: 5-D attention inputs used to fall back to torch's unfused path, which
    upcasts bfloat16 to float32 (the float32 GEMM found on the GPU). Checked with CPU autocast."""
    encoder = _folded_encoder()
    frames = random_frames(batch=2)
    with torch.autocast("cpu", dtype=torch.bfloat16), ProductDtypes() as products:
        video, _ = encoder.model.encode_video(frames)
    assert video.dtype == torch.bfloat16
    float32 = {op: n for op, n in products.seen.items() if torch.float32 in op[1]}
    assert not float32, f"float32 matrix products under autocast: {float32}"
    assert any(name.startswith("_scaled_dot_product_flash") for name, _ in products.seen), "fused attention ran"


@torch.no_grad()
def test_a_video_embeds_alike_alone_and_in_any_batch():
    """What padding a batch for a captured graph relies on: rows never mix."""
    encoder = _folded_encoder()
    frames = random_frames(batch=4)
    together = encoder.encode_video(frames)
    for i in range(4):
        torch.testing.assert_close(encoder.encode_video(frames[i : i + 1]), together[i : i + 1], atol=1e-6, rtol=1e-5)


def test_batch_graphs_pad_to_the_smallest_captured_size_and_cut_the_rows():
    encoder = _folded_encoder()
    captured: list[int] = []

    def capture(fn, static_input):
        captured.append(static_input.shape[0])
        return eager_capture(fn, static_input)

    graphs = BatchGraphs(encoder._encode_frames, capture, max_graphs=2)
    frames = random_frames(batch=8, seed=1)
    eager = encoder.encode_video(frames)
    runs = [(0, 4), (4, 7), (7, 8), (0, 6), (2, 8), (0, 8)]  # 4 captures; 3 and 1 replay it; 6 captures; then eager
    for start, stop in runs:
        out = graphs(frames[start:stop])
        assert out.shape == (stop - start, encoder.embed_dim)
        torch.testing.assert_close(out, eager[start:stop], atol=1e-6, rtol=1e-5)
    assert captured == [4, 6] and graphs.sizes == [4, 6]
    assert graphs.graph_size(frames[:5]) == 6 and graphs.graph_size(frames[:2]) == 4
    assert graphs.graph_size(frames) is None  # 8 ran eagerly: max_graphs reached


def test_batch_graphs_zero_the_padding_rows():
    seen: list[torch.Tensor] = []

    def fn(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.clone())
        return batch.sum(dim=(1, 2), keepdim=False)[:, None]

    graphs = BatchGraphs(fn, eager_capture)
    graphs(torch.ones(3, 2, 2))
    out = graphs(torch.full((2, 2, 2), 5.0))
    assert torch.equal(out, torch.full((2, 1), 20.0))
    assert torch.equal(seen[-1][2], torch.zeros(2, 2)), "the padding row is zeros, not the previous batch"


def test_cuda_graphs_are_never_used_on_a_cpu():
    encoder = _folded_encoder()
    frames = random_frames(batch=2)
    eager = encoder.encode_video(frames)
    assert encoder.use_cuda_graphs() is False
    torch.testing.assert_close(encoder.encode_video(frames), eager, atol=0, rtol=0)
    torch.manual_seed(0)
    model = randomise_adapter(create_model("tiny").eval())
    assert Encoder(copy.deepcopy(model), "test", "cpu", cuda_graphs=True)._video_graphs is None


def test_the_encoders_graph_path_equals_its_eager_path():
    """Encoder.encode_video through BatchGraphs (as on CUDA, with the eager stand-in): same embeddings."""
    encoder = _folded_encoder()
    frames = random_frames(batch=5, seed=2)
    eager = encoder.encode_video(frames)
    encoder._video_graphs = BatchGraphs(encoder._encode_frames, eager_capture)
    torch.testing.assert_close(encoder.encode_video(frames), eager, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(encoder.encode_video(frames[:2]), eager[:2], atol=1e-6, rtol=1e-5)
    assert encoder._video_graphs.sizes == [5]
