"""Multi-head attention blocks shared by every Q-Former in videoqf.

Follows BERT / BLIP-2's Q-Former (Li et al., 2023, arXiv:2301.12597): post-norm residual blocks,
scaled dot-product attention. All attention goes through
``torch.nn.functional.scaled_dot_product_attention`` so the fused kernels (flash / memory-efficient on
GPU, the fused CPU kernel here) are used whenever the mask allows it.

Notation: B batch, S query length, K key length, H hidden width, h heads, d = H / h.
Boolean masks mean "may attend" (True) and broadcast to ``[B, h, S, K]``.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

KeyValue = tuple[torch.Tensor, torch.Tensor]


class FoldedTokens(NamedTuple):
    """Encoder tokens for a cross-attention layer whose key/value projections are folded into the queries.

    tokens: [B, N, W]; key_weight / value_weight: [H, W]; value_bias: [H]. The key bias adds the same
    number to every score of a query, so softmax cancels it and it is not needed.
    """

    tokens: torch.Tensor
    key_weight: torch.Tensor
    value_weight: torch.Tensor
    value_bias: torch.Tensor


def attend_folded(q: torch.Tensor, kv: FoldedTokens, mask: torch.Tensor | None, dropout: float) -> torch.Tensor:
    """Attention of q [B, h, S, d] to the encoder tokens without projecting them: softmax(q W_k x^T / sqrt(d)) x,
    then W_v. Per layer that is 2 h S W FLOPs per encoder token for the scores and as many for the values,
    against 4 H W for projecting the token (H = h d); fewer when h S < H, as for BLIP-2's 12 heads x 32 queries
    at width 768. Returns [B, S, H].

    With gradients SDPA runs its math kernel: its backward is autograd's, which skips the tokens' key / value
    gradients when the tokens need none (frozen encoder features); the fused CPU kernel computes them anyway.
    """
    heads, dim = q.shape[1], q.shape[3]
    width = kv.tokens.shape[-1]
    q_in = einsum(q, kv.key_weight.view(heads, dim, width), "b h s d, h d w -> b h s w")
    # heads x queries as the rows of one W-wide "head": SDPA then reads the tokens as keys and values, uncopied
    tokens = kv.tokens[:, None]  # [B, 1, N, W]
    with sdpa_kernel([SDPBackend.MATH]) if q_in.requires_grad else nullcontext():
        mixed = F.scaled_dot_product_attention(q_in.flatten(1, 2)[:, None], tokens, tokens, attn_mask=mask,
                                               dropout_p=dropout, scale=dim**-0.5)  # [B, 1, h S, W], before W_v
    out = einsum(mixed.view(q.shape[0], heads, -1, width), kv.value_weight.view(heads, dim, width),
                 "b h s w, h d w -> b s h d")
    return rearrange(out, "b s h d -> b s (h d)") + kv.value_bias


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, dropout: float
) -> torch.Tensor:
    """SDPA over heads. q: [B,h,S,d], k/v: [B,h,K,d], mask: bool broadcastable to [B,h,S,K] or None.

    Returns [B, S, H] with heads merged.
    """
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    return rearrange(out, "b h s d -> b s (h d)")


class ResidualNorm(nn.Module):
    """Output projection, dropout, then LayerNorm over the residual sum (BERT's post-norm ``*Output``)."""

    def __init__(self, *, in_features: int, hidden_size: int, dropout: float, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_features, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(self.dense(x)) + residual)


class SelfAttention(nn.Module):
    """Self-attention with one fused QKV projection and an optional key/value cache.

    ``past`` holds the keys/values of earlier positions ([B,h,P,d] each); the new positions attend to
    ``[past; new]`` under ``mask`` ([B,1,S,P+S] bool). Returns the block output and the full key/value
    pair so callers can cache it.
    """

    def __init__(self, *, hidden_size: int, num_heads: int, dropout: float, eps: float):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = ResidualNorm(in_features=hidden_size, hidden_size=hidden_size, dropout=dropout, eps=eps)
        self.dropout = dropout

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, past: KeyValue | None = None
    ) -> tuple[torch.Tensor, KeyValue]:
        q, k, v = rearrange(self.qkv(x), "b s (three h d) -> three b h s d", three=3, h=self.num_heads)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        y = attend(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.out(y, x), (k, v)


class CrossAttention(nn.Module):
    """Cross-attention from the query positions to precomputed encoder keys/values, or to the encoder
    tokens themselves with the projections folded into the queries (``FoldedTokens``).

    The key/value projections of the encoder tokens live outside (see ``QFormer.encode_context``):
    the encoder tokens are the same for every cross-attention layer, so all layers' keys and values are
    computed in one matrix product, and can be reused across passes over the same video.
    """

    def __init__(self, *, hidden_size: int, num_heads: int, dropout: float, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(hidden_size, hidden_size)
        self.out = ResidualNorm(in_features=hidden_size, hidden_size=hidden_size, dropout=dropout, eps=eps)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, kv: KeyValue | FoldedTokens, mask: torch.Tensor | None) -> torch.Tensor:
        q = rearrange(self.q(x), "b s (h d) -> b h s d", h=self.num_heads)
        dropout = self.dropout if self.training else 0.0
        y = attend_folded(q, kv, mask, dropout) if isinstance(kv, FoldedTokens) else attend(q, *kv, mask, dropout)
        return self.out(y, x)
