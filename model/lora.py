"""LoRA on the fused q/k/v projection of an attention layer (docs/METHOD.md section 1)."""

from __future__ import annotations

import math

import torch
from torch import nn


class QKVLoRA(nn.Module):
    """One ``A`` [r, D] shared by q, k and v and one ``B`` [3D, r] whose row blocks are B_q, B_k, B_v.

    ``q = W_q u + b_q + B_q (A u)`` (likewise k, v) with no scaling factor, which is the same as using the
    weight ``W + B A``. ``B`` starts at zero, so an untrained pair leaves the frozen layer unchanged.
    """

    def __init__(self, width: int, rank: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.empty(rank, width))
        self.b = nn.Parameter(torch.zeros(3 * width, rank))
        nn.init.kaiming_uniform_(self.a, a=math.sqrt(5))

    def delta(self) -> torch.Tensor:
        """The [3D, D] update to the fused in-projection weight."""
        return self.b @ self.a


def lora_at(layers: nn.ModuleList | None, index: int) -> QKVLoRA | None:
    """Block ``index``'s LoRA pair from a tower's list, or None when the tower has none (folded, zero-shot)."""
    if layers is None:
        return None
    lora = layers[index]
    assert isinstance(lora, QKVLoRA), f"a LoRA list holds {type(lora).__name__}"
    return lora


def qkv_weight(attn: nn.MultiheadAttention, lora: QKVLoRA | None) -> torch.Tensor:
    """The in-projection weight of ``attn`` with its LoRA applied (or already folded in, if ``lora`` is None)."""
    weight = attn.in_proj_weight
    return weight if lora is None else weight + lora.delta().to(weight.dtype)
