"""Projector from the video backend's tokens to the frozen LLM's embedding space.

BLIP-2 (Li et al., 2023) uses one Linear layer from the Q-Former width to the LLM width; the
"mlp" kind is the two-layer GELU MLP of LLaVA-1.5 (Liu et al., 2023). Both map each token on its own.
The "flatten" kind maps all M tokens at once ([B, M * in_dim] -> [B, M * out_dim]): a frozen LLM reads its
soft prompt in its own layout, which need not split the way the queries split what they hold (the synthetic
world's caption LM was pre-trained on a caption encoder's slots, see ``videoqf/llm/prefix_encoder.py``).
"""
from __future__ import annotations

import torch
from torch import nn

from videoqf.llm.config import ProjectorConfig


class Projector(nn.Module):
    """tokens: [B, M, in_dim], mask [B, M] bool (None: all real) -> [B, M, out_dim].

    num_tokens: M, which the "flatten" kind needs (and checks); the others take any M.
    """

    def __init__(self, in_dim: int, out_dim: int, *, kind: str = "linear", hidden_dim: int | None = None,
                 num_tokens: int | None = None) -> None:
        super().__init__()
        ProjectorConfig(kind=kind, hidden_dim=hidden_dim)  # validates kind
        self.num_tokens = num_tokens if kind == "flatten" else None
        if kind == "flatten":
            if not num_tokens or num_tokens < 1:
                raise ValueError(f"the flatten projector needs the number of video tokens, got {num_tokens!r}")
            self.net = nn.Linear(num_tokens * in_dim, num_tokens * out_dim)
        elif kind == "linear":
            self.net = nn.Linear(in_dim, out_dim)
        else:
            hidden = hidden_dim or out_dim
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    @classmethod
    def from_config(cls, in_dim: int, out_dim: int, config: ProjectorConfig, *,
                    num_tokens: int | None = None) -> "Projector":
        return cls(in_dim, out_dim, kind=config.kind, hidden_dim=config.hidden_dim, num_tokens=num_tokens)

    @property
    def mixes_tokens(self) -> bool:
        """Whether each output token reads every input token (then no output token is padding)."""
        return self.num_tokens is not None

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.mixes_tokens:
            return self.net(tokens)
        batch, count, _ = tokens.shape
        if count != self.num_tokens:
            raise ValueError(f"the flatten projector was built for {self.num_tokens} video tokens, got {count}")
        if mask is not None:  # a masked token (e.g. the audio slots of a silent clip) contributes nothing
            tokens = tokens * mask[..., None].to(tokens.dtype)
        return self.net(tokens.reshape(batch, -1)).reshape(batch, count, -1)
