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


class TokenStandardizer(nn.Module):
    """tokens [..., N, D] -> (tokens - mean[N, D]) / std[N, D]; identity until ``fit`` has run."""

    def __init__(self, num_tokens: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(num_tokens, dim))
        self.register_buffer("std", torch.ones(num_tokens, dim))
        self.register_buffer("count", torch.zeros(()))

    @property
    def fitted(self) -> bool:
        return bool(self.count > 0)

    @torch.no_grad()
    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Statistics over the real items of ``batches``: (tokens [B, K, N, D], mask [B, K] bool) pairs."""
        total = torch.zeros_like(self.mean, dtype=torch.float64)
        squares = torch.zeros_like(total)
        count = 0
        for tokens, mask in batches:
            if tokens.shape[-2:] != self.mean.shape:
                raise ValueError(f"tokens of shape {tuple(tokens.shape[-2:])} do not fit statistics of shape "
                                 f"{tuple(self.mean.shape)}")
            real = tokens[mask.bool()].double()  # [R, N, D]
            total += real.sum(0)
            squares += real.square().sum(0)
            count += real.shape[0]
        if count < 2:
            raise ValueError(f"feature standardisation needs at least 2 real items, got {count}")
        mean = total / count
        var = (squares / count - mean.square()).clamp_min(0) * count / (count - 1)
        self.mean.copy_(mean)
        self.std.copy_(var.sqrt())
        self.count.fill_(count)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            return tokens
        return (tokens - self.mean.to(tokens.dtype)) / (self.std.to(tokens.dtype) + self.eps)
