"""Learned position embedding over frames (or audio segments), stretched past its table.

Video-LLaMA (Zhang et al., 2023, arXiv:2306.02858) adds ``nn.Embedding(32, H)`` to each frame's query
outputs and cannot take a 33rd frame. Here a clip of ``L <= num_positions`` frames uses rows
``0 .. L-1`` exactly as Video-LLaMA does; a longer clip reads the table at fractional positions
``t * (num_positions - 1) / (L - 1)`` with linear interpolation between neighbouring rows (the same
idea as ViT's resized position tables), so the first and last frame keep the first and last row.

``L`` is counted per sample up to its last real frame, so padding a batch with masked frames at the end
never moves the positions of the real ones.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import one_hot


class TemporalPositionEmbedding(nn.Module):
    """``forward(frame_mask [B, T] bool) -> [B, T, dim]`` position vectors, one per frame slot.

    The table starts at N(0, 1), ``nn.Embedding``'s own init, which Video-LLaMA's frame position embedding
    keeps: the vectors are added to LayerNorm-ed query outputs of unit scale, and at BERT's 0.02 the frames
    look alike until training has grown them (docs/decisions.md).
    """

    def __init__(self, *, num_positions: int, dim: int, init_std: float = 1.0):
        super().__init__()
        if num_positions < 1:
            raise ValueError(f"num_positions must be >= 1, got {num_positions}")
        self.table = nn.Parameter(torch.randn(num_positions, dim) * init_std)

    @property
    def num_positions(self) -> int:
        return self.table.shape[0]

    def forward(self, frame_mask: torch.Tensor) -> torch.Tensor:
        batch, slots = frame_mask.shape
        slot = torch.arange(slots, device=frame_mask.device)
        # length = 1 + index of the last real frame (0 for a sample with none)
        length = (torch.where(frame_mask.bool(), slot + 1, 0)).amax(dim=1)  # [B]
        stretch = torch.where(
            length > self.num_positions,
            (self.num_positions - 1) / (length - 1).clamp(min=1),
            torch.ones_like(length, dtype=torch.float),
        )
        position = (slot[None, :] * stretch[:, None]).clamp(max=self.num_positions - 1)  # [B, T] float
        low = position.floor().long()
        high = (low + 1).clamp(max=self.num_positions - 1)
        frac = (position - low).unsqueeze(-1).to(self.table.dtype)
        # rows mixed by a matrix product: the backward of indexing the table (a scatter-add) sums in a
        # different order on every run when torch has several threads, so no two runs trained alike
        mix = one_hot(low, self.num_positions) * (1 - frac) + one_hot(high, self.num_positions) * frac
        return mix @ self.table
