"""A compact inference copy of the text tower, at float32, bfloat16 or int8.

The training module runs the text tower through ``F.linear`` on the (LoRA-folded) fused in-projection, which
autocast can speed up but quantisation cannot reach. ``compact_text_tower`` copies a folded tower into
plain ``nn.Linear`` layers, so the copy can be cast to bfloat16 or given int8 weights by PyTorch's dynamic
quantisation (weights int8 per output channel, activations quantised on the fly; CPU only). A search query
is a few tokens, so the tower's cost is reading its weights: int8 reads a quarter of float32's bytes.
Measured in docs/BENCHMARKS.md (speed, and agreement with float32 rankings).
"""

from __future__ import annotations

import copy
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from torch import nn

TextPrecision = Literal["float32", "bfloat16", "int8"]
TEXT_PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "int8")


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return layer


class _Block(nn.Module):
    """One residual attention block (pre-norm, causal self-attention, MLP) with plain linear layers."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        attn = block.attn
        self.heads = attn.num_heads
        self.ln_1, self.ln_2 = copy.deepcopy(block.ln_1), copy.deepcopy(block.ln_2)
        self.ls_1, self.ls_2 = copy.deepcopy(block.ls_1), copy.deepcopy(block.ls_2)
        self.qkv = _linear(attn.in_proj_weight, attn.in_proj_bias)
        self.out = _linear(attn.out_proj.weight, attn.out_proj.bias)
        self.mlp = copy.deepcopy(block.mlp)  # c_fc, activation, c_proj: already nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        qkv = self.qkv(self.ln_1(x)).view(b, length, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.ls_1(self.out(out.transpose(1, 2).reshape(b, length, d)))
        return x + self.ls_2(self.mlp(self.ln_2(x)))


class _Blocks(nn.Sequential):
    """The residual blocks in order, as one module (so that they can be traced as one)."""


class CompactTextTower(nn.Module):
    """Token ids (B, L) -> raw text embeddings (B, E), computed as ``text_tower.run_text_tower`` does."""

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
        eot = ids.argmax(dim=-1)  # the causal mask lets everything after the longest EOT be cut
        length = int(eot.max()) + 1
        x = self.token_embedding(ids[:, :length])
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
        with warnings.catch_warnings():  # torch.ao's eager quantisation warns that it is moving to torchao
            warnings.simplefilter("ignore")
            tower = torch.ao.quantization.quantize_dynamic(
                tower, {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, inplace=True
            )
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
