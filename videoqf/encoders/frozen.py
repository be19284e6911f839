"""What every frozen image encoder shares, whichever library runs it (timm here, transformers for a released
checkpoint's tower): frozen for good (eval mode, ``requires_grad=False``, no grad), its weights identified by a
cached hash, and clips run ``chunk_size`` frames at a time.

Notation: B batch, T frames, C channels, H/W image size, N tokens per frame, D width.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from videoqf.encoders.weights import state_dict_hash


class FrozenImageEncoder(nn.Module):
    """frames [B, T, C, H, W] -> tokens [B, T, N, D] through ``encode_images`` (images [K, C, H, W] -> [K, N, D]),
    which a subclass gives with ``output_dim``, ``num_tokens`` and ``data_config``."""

    def __init__(self, model: nn.Module, *, chunk_size: int):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        self.model.requires_grad_(False)
        self.train(False)
        self._weight_hash: str | None = None

    def train(self, mode: bool = True) -> "FrozenImageEncoder":
        """Stays in eval mode whatever the parent asks (dropout / drop-path must stay off)."""
        return super().train(False)

    def weight_hash(self) -> str:
        """sha256 of the weights actually used (computed once, then cached)."""
        if self._weight_hash is None:
            self._weight_hash = state_dict_hash(self.model)
        return self._weight_hash

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, C, H, W] -> tokens [B, T, N, D], ``chunk_size`` frames per forward pass."""
        if frames.dim() != 5:
            raise ValueError(f"frames must be [B, T, C, H, W], got shape {tuple(frames.shape)}")
        flat = rearrange(frames, "b t c h w -> (b t) c h w")
        tokens = torch.cat([self.encode_images(chunk) for chunk in flat.split(self.chunk_size)])
        return rearrange(tokens, "(b t) n d -> b t n d", b=frames.shape[0])
