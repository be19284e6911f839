"""Standardisation of frozen-encoder tokens with statistics of the training set.

Each (token position, channel) of the frozen encoder's output is shifted and scaled by its mean and
standard deviation over the training clips. A frozen encoder's tokens can be dominated by a part that is
the same for every input (position embeddings, and for a randomly initialised encoder nearly everything):
the Q-Former's queries then see almost the same thing for every clip, and at initialisation their outputs
differ between clips by little more than rounding. Removing the shared part first is what a linear probe
on frozen features does too (feature standardisation); the LayerNorm that follows (BLIP-2's ``ln_vision``)
cannot, as it normalises across channels, not across clips.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class TokenMoments:
    """Running count, sum and sum of squares of tokens [N, D] (float64), fed batch by batch."""

    def __init__(self, num_tokens: int, dim: int):
        self.total = torch.zeros(num_tokens, dim, dtype=torch.float64)
        self.squares = torch.zeros_like(self.total)
        self.count = 0

    def add(self, tokens: torch.Tensor, mask: torch.Tensor) -> None:
        """tokens [B, K, N, D], mask [B, K] bool: the real items among them are counted."""
        if tokens.shape[-2:] != self.total.shape:
            raise ValueError(f"tokens of shape {tuple(tokens.shape[-2:])} do not fit statistics of shape "
                             f"{tuple(self.total.shape)}")
        real = tokens[mask.bool()].double().cpu()  # [R, N, D]
        self.total += real.sum(0)
        self.squares += real.square().sum(0)
        self.count += real.shape[0]


class TokenStandardizer(nn.Module):
    """tokens [..., N, D] -> (tokens - mean[N, D]) / std[N, D]; identity until fitted."""

    def __init__(self, num_tokens: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(num_tokens, dim))
        self.register_buffer("std", torch.ones(num_tokens, dim))
        self.register_buffer("count", torch.zeros(()))

    @property
    def fitted(self) -> bool:
        return bool(self.count > 0)

    def moments(self) -> TokenMoments:
        """An empty accumulator of this standardiser's shape (for fitting in one pass with others)."""
        return TokenMoments(*self.mean.shape)

    @torch.no_grad()
    def set_statistics(self, moments: TokenMoments) -> None:
        """Mean and (unbiased) std from accumulated ``moments``."""
        count = moments.count
        if count < 2:
            raise ValueError(f"feature standardisation needs at least 2 real items, got {count}")
        mean = moments.total / count
        var = (moments.squares / count - mean.square()).clamp_min(0) * count / (count - 1)
        self.mean.copy_(mean)
        self.std.copy_(var.sqrt())
        self.count.fill_(count)

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Statistics over the real items of ``batches``: (tokens [B, K, N, D], mask [B, K] bool) pairs."""
        moments = self.moments()
        for tokens, mask in batches:
            moments.add(tokens, mask)
        self.set_statistics(moments)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            return tokens
        # one pass over the tokens (x * scale + shift) instead of a subtraction and a division, each a full copy
        scale = (self.std.to(tokens.dtype) + self.eps).reciprocal()
        return torch.addcmul(-self.mean.to(tokens.dtype) * scale, tokens, scale)
