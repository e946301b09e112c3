"""The CLIP text tower with LoRA (docs/METHOD.md section 4) and the tokenizer."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from .lora import lora_at, qkv_weight


@functools.lru_cache(maxsize=1)
def _bpe() -> SimpleTokenizer:
    return SimpleTokenizer()


def tokenize(texts: list[str], max_words: int) -> torch.Tensor:
    """CLIP BPE ids (len(texts), max_words): [SOT] + tokens[:max_words-2] + [EOT], zero padded."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of strings")
    return _bpe()(list(texts), context_length=max_words)


def run_text_tower(clip: CLIP, loras: nn.ModuleList | None, ids: torch.Tensor) -> torch.Tensor:
    """Text embeddings (B, E) read at EOT, the largest id of each row.

    The mask is causal and the output is read at EOT, so positions after the longest EOT of the batch
    cannot change a result: they are cut before the transformer runs.
    """
    eot = ids.argmax(dim=-1)  # (B,)
    length = int(eot.max()) + 1
    ids = ids[:, :length]
    x = clip.token_embedding(ids) + clip.positional_embedding[:length].to(clip.token_embedding.weight.dtype)
    b, _, d = x.shape
    for i, block in enumerate(clip.transformer.resblocks):
        attn = block.attn
        h = attn.num_heads
        qkv = F.linear(block.ln_1(x), qkv_weight(attn, lora_at(loras, i)), attn.in_proj_bias)
        q, k, v = qkv.view(b, length, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, hd)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, L, hd)
        x = x + block.ls_1(attn.out_proj(out.transpose(1, 2).reshape(b, length, d)))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    x = clip.ln_final(x[torch.arange(b, device=x.device), eot])  # (B, D)
    projection = clip.text_projection
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection
