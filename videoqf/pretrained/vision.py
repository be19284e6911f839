"""A released checkpoint's frozen vision tower, run through transformers' own vision model.

BLIP-2 / InstructBLIP (Li et al., 2023; Dai et al., 2023) feed the Q-Former the EVA ViT-g's last kept block
followed by a LayerNorm (LAVIS ``ln_vision``; transformers ``post_layernorm``). That LayerNorm is BLIP-2's
trainable ``ln_vision``, which here belongs to the backend, so the tower is the transformers vision model with
its ``post_layernorm`` taken out (``split_post_layernorm``) and the backend receives the same features it
would from any frozen encoder.

Notation: B batch, T frames, N tokens per frame (class + patches), D width.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from videoqf.encoders.frozen import FrozenImageEncoder


def split_post_layernorm(vision_model: nn.Module) -> nn.LayerNorm:
    """Take the vision model's final LayerNorm out (replaced by identity) and return it, in fp32."""
    norm = vision_model.post_layernorm
    vision_model.post_layernorm = nn.Identity()
    return norm.float()


class PretrainedVisionEncoder(FrozenImageEncoder):
    """frames [B, T, 3, H, W] (normalised as ``data_config`` says) -> tokens [B, T, N, D] in fp32.

    model: a transformers Blip2 / InstructBlip(Video) vision model whose ``post_layernorm`` was split off.
    data_config: ``dict(image_size, mean, std)`` of the checkpoint's image processor.
    Frozen: eval mode, ``requires_grad=False``, run under no_grad; ``chunk_size`` frames per pass.
    """

    def __init__(self, model: nn.Module, data_config: dict[str, Any], *, chunk_size: int = 32):
        if not isinstance(model.post_layernorm, nn.Identity):
            raise ValueError("split the vision model's post_layernorm off first: it is the backend's ln_vision")
        super().__init__(model, chunk_size=chunk_size)
        self._data_config = dict(data_config)

    @property
    def data_config(self) -> dict[str, Any]:
        return dict(self._data_config)

    @property
    def output_dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_tokens(self) -> int:
        return (self.model.config.image_size // self.model.config.patch_size) ** 2 + 1

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embeddings.patch_embedding.weight.dtype

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """images [K, 3, H, W] -> tokens [K, N, D] (fp32, the trainable side's dtype)."""
        weight = self.model.embeddings.patch_embedding.weight
        out = self.model(pixel_values=images.to(device=weight.device, dtype=weight.dtype))
        return out.last_hidden_state.float()
