"""A compact inference copy of the text tower, at float32, bfloat16 or int8.

The training module runs the text tower through ``F.linear`` on the (LoRA-folded) fused in-projection, which
autocast can speed up but quantisation cannot reach. ``compact_text_tower`` copies a folded tower into
plain linear layers, so the copy can be cast to bfloat16 or given int8 weights (per output channel) and
int8 activations. A search query is a few tokens, so much of the tower's cost is reading its weights: int8
reads a quarter of float32's bytes. Measured in docs/BENCHMARKS.md (speed, and agreement with float32).

A text's embedding does not depend on the texts encoded beside it, bit for bit:

- int8 activations are scaled per row (token), not per input as PyTorch's dynamic quantisation does
  (``RowInt8Linear``); the integer products are exact.
- Attention kernels round differently for different lengths (a bfloat16 embedding moved by 4e-2 with the
  padding to a longer neighbour), so every text is padded to its own length rounded up to ``BUCKET``
  tokens, and texts of equal padded length run together: a text sees the same shapes, and the same
  kernels, alone or in any batch. Only the number of rows changes, which no row-wise operation (linear
  layers, layer norm, activations) depends on.
"""

from __future__ import annotations

import copy
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import ResidualAttentionBlock
from torch import nn

TextPrecision = Literal["float32", "bfloat16", "int8"]
TEXT_PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "int8")
BUCKET = 4  # tokens: texts are padded to a multiple of this and run in groups of equal length (see above)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return layer


class _Block(nn.Module):
    """One residual attention block (pre-norm, causal self-attention, MLP) with plain linear layers."""

    def __init__(self, block: ResidualAttentionBlock) -> None:
        super().__init__()
        attn: nn.MultiheadAttention = block.attn
        self.heads = attn.num_heads
        self.ln_1: nn.Module = copy.deepcopy(block.ln_1)
        self.ln_2: nn.Module = copy.deepcopy(block.ln_2)
        self.ls_1: nn.Module = copy.deepcopy(block.ls_1)
        self.ls_2: nn.Module = copy.deepcopy(block.ls_2)
        self.qkv: nn.Module = _linear(attn.in_proj_weight, attn.in_proj_bias)  # nn.Linear, or RowInt8Linear
        self.out: nn.Module = _linear(attn.out_proj.weight, attn.out_proj.bias)
        self.mlp: nn.Module = copy.deepcopy(block.mlp)  # c_fc, activation, c_proj: already nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        qkv = self.qkv(self.ln_1(x)).view(b, length, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.ls_1(self.out(out.transpose(1, 2).reshape(b, length, d)))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class RowInt8Linear(nn.Module):
    """A linear layer with int8 weights (one scale per output channel) and int8 activations with one scale
    per row (token), so that a row's result depends on that row alone (CPU only).

    PyTorch's dynamic quantisation scales the activations of the whole input by its own range, so a text's
    embedding moved with the texts encoded beside it. Here every row is first divided by its largest
    magnitude; the rows, now in [-1, 1], are quantised with one fixed scale by fbgemm's int8 kernel (the
    one dynamic quantisation runs), and the result is multiplied back row by row: four small operations
    more per layer. The activations use 7 bits (0..127, zero point 64), as fbgemm's dynamic quantisation
    does on x86 to avoid int16 saturation in its non-VNNI kernels.
    """

    INPUT_SCALE = 1.0 / 63  # rows in [-1, 1] -> 1..127
    INPUT_ZERO_POINT = 64
    bias: torch.Tensor  # a buffer (zeros for a layer without bias)

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float().cpu()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (N,): symmetric, per output channel
        zero = torch.zeros(weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # quantised tensors are deprecated in favour of torchao
            warnings.simplefilter("ignore")
            quantised = torch.quantize_per_channel(weight, scale.double(), zero, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(quantised, None)
        bias = linear.bias.detach().float().cpu() if linear.bias is not None else torch.zeros(weight.shape[0])
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-12)  # each row's largest magnitude
        out = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
            x / scale, self.INPUT_SCALE, self.INPUT_ZERO_POINT, self.packed
        )
        return torch.addcmul(self.bias, out, scale)


def _quantise_linears(module: nn.Module) -> None:
    """Replace every nn.Linear below ``module`` by its RowInt8Linear."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, RowInt8Linear(child))
        else:
            _quantise_linears(child)


class _Blocks(nn.Sequential):
    """The residual blocks in order, as one module (so that they can be traced as one)."""


class CompactTextTower(nn.Module):
    """Token ids (B, L) -> raw text embeddings (B, E), computed as ``text_tower.run_text_tower`` does."""

    positional_embedding: torch.Tensor  # a buffer, (context length, D)

    def __init__(self, clip: CLIP) -> None:
        super().__init__()
        self.token_embedding = copy.deepcopy(clip.token_embedding)
        self.register_buffer("positional_embedding", clip.positional_embedding.detach().clone())
        self.blocks: nn.Module = _Blocks(*(_Block(block) for block in clip.transformer.resblocks))
        self.ln_final = copy.deepcopy(clip.ln_final)
        projection = clip.text_projection
        if isinstance(projection, nn.Linear):
            self.projection = copy.deepcopy(projection)
        else:  # a (D, E) matrix applied as x @ P
            self.projection = _linear(projection.T, None)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        eot = ids.argmax(dim=-1)  # (B,): the causal mask lets everything after EOT be cut
        lengths = ((eot + BUCKET) // BUCKET * BUCKET).clamp(max=ids.shape[1])  # EOT + 1, rounded up
        groups = lengths.unique().tolist()
        if len(groups) == 1:
            return self._run(ids[:, : groups[0]], eot)
        rows = [(lengths == length).nonzero().squeeze(1) for length in groups]
        parts = [self._run(ids[r, :length], eot[r]) for r, length in zip(rows, groups, strict=True)]
        out = torch.cat(parts)
        return out.index_copy(0, torch.cat(rows), out)  # back to the input's order

    def _run(self, ids: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        x = self.token_embedding(ids)
        x = x + self.positional_embedding[:length].to(x.dtype)
        x = self.blocks(x)
        return self.projection(self.ln_final(x[torch.arange(x.shape[0], device=x.device), eot]))


def compact_text_tower(
    clip: CLIP, precision: TextPrecision, device: torch.device, trace: bool = True
) -> CompactTextTower:
    """An inference-only copy of ``clip``'s text tower (LoRA already folded in) at ``precision``; on the CPU
    its blocks run as a TorchScript trace unless ``trace`` is False."""
    if precision not in TEXT_PRECISIONS:
        raise ValueError(f"text precision must be one of {', '.join(TEXT_PRECISIONS)}, got {precision!r}")
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"int8 text precision runs on the CPU only, not on {device}; use bfloat16 there")
    tower = CompactTextTower(clip).eval().to(device)
    if precision == "bfloat16":
        tower = tower.to(torch.bfloat16)
    if precision == "int8":
        _quantise_linears(tower)
    if trace and device.type == "cpu":
        tower.blocks = trace_blocks(tower.blocks, tower.positional_embedding.shape[1], tower.ln_final.weight.dtype)
    return tower


def trace_blocks(blocks: nn.Module, width: int, dtype: torch.dtype) -> nn.Module:
    """``blocks`` as a TorchScript trace: a query is a few tokens, so Python's cost per operation is a large
    share of its time on the CPU, and the trace takes about a quarter off (docs/BENCHMARKS.md). Batch size
    and length stay free: the blocks read them from the input's shape, never from Python numbers. Falls
    back to ``blocks`` itself where tracing fails (torch.jit is deprecated in favour of torch.compile, which
    needs a C++ compiler at start-up)."""
    example = torch.zeros(1, 8, width, dtype=dtype)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            return torch.jit.trace(blocks, example, check_trace=False)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the eager module, which is correct
        warnings.warn(f"text tower: tracing failed ({exc}); running it eagerly", RuntimeWarning, stacklevel=2)
        return blocks
