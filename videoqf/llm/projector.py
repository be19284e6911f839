"""Projector from the video backend's tokens to the frozen LLM's embedding space.

BLIP-2 (Li et al., 2023) uses one Linear layer from the Q-Former width to the LLM width; the
"mlp" kind is the two-layer GELU MLP of LLaVA-1.5 (Liu et al., 2023).
"""
from __future__ import annotations

import torch
from torch import nn

from videoqf.llm.config import ProjectorConfig


class Projector(nn.Module):
    """tokens: [B, M, in_dim] -> [B, M, out_dim]."""

    def __init__(self, in_dim: int, out_dim: int, *, kind: str = "linear", hidden_dim: int | None = None) -> None:
        super().__init__()
        ProjectorConfig(kind=kind, hidden_dim=hidden_dim)  # validates kind
        if kind == "linear":
            self.net = nn.Linear(in_dim, out_dim)
        else:
            hidden = hidden_dim or out_dim
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    @classmethod
    def from_config(cls, in_dim: int, out_dim: int, config: ProjectorConfig) -> "Projector":
        return cls(in_dim, out_dim, kind=config.kind, hidden_dim=config.hidden_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)
