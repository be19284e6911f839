"""Frozen timm vision transformer that turns video frames into per-frame patch tokens.

Follows BLIP-2 (Li et al., 2023): the image encoder (EVA ViT-g there, any timm ViT here) is frozen, its
second-to-last block's output (class token included) feeds the Q-Former, and the blocks after it are not
kept at all. The LayerNorm BLIP-2 applies next (``ln_vision``) is trainable and belongs to the backend.

Notation: B batch, T frames, C channels, H/W image size, N tokens per frame (prefix + patches), D width.
"""
from __future__ import annotations

from typing import Any

import timm
import torch
from timm.data import resolve_data_config

from videoqf.encoders.config import VisionEncoderConfig
from videoqf.encoders.frozen import FrozenImageEncoder
from videoqf.encoders.weights import load_weights_strict


def resolve_dtype(name: str) -> torch.dtype:
    """Config dtype name -> torch dtype; "auto" is half precision on a GPU and fp32 on the CPU."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, name)


class FrozenVisionEncoder(FrozenImageEncoder):
    """frames [B, T, C, H, W] -> tokens [B, T, N, D] from block ``config.block_index`` (no final norm).

    Always in eval mode with ``requires_grad=False``; runs under ``torch.no_grad()``. Tokens come out in
    the weights' dtype (bf16/fp16 on a GPU with ``dtype="auto"``); the trainable side casts as it needs.
    """

    def __init__(self, config: VisionEncoderConfig):
        kwargs: dict[str, Any] = dict(config.model_kwargs)
        if config.image_size is not None:
            kwargs["img_size"] = config.image_size
        model = timm.create_model(
            config.model_name, pretrained=False, num_classes=0, in_chans=config.in_chans, **kwargs
        )
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "prune_intermediate_layers"):
            raise TypeError(
                f"timm model {config.model_name!r} has no forward_intermediates/prune_intermediate_layers; "
                "FrozenVisionEncoder needs a timm ViT-family model"
            )
        if config.weights is not None:
            load_weights_strict(model, config.weights, drop_keys=config.drop_keys)
        elif not config.allow_random:
            raise ValueError(
                f"no weights for vision encoder {config.model_name!r}: set weights=PATH (a .safetensors or "
                "state-dict file, or a local Hugging Face cache folder); random weights need allow_random=True"
            )
        num_blocks = len(model.blocks)
        if not -num_blocks <= config.block_index < num_blocks:
            raise ValueError(
                f"block_index={config.block_index} is out of range for {config.model_name!r} "
                f"with {num_blocks} blocks"
            )
        block_index = config.block_index % num_blocks
        # Blocks after the one we read from, the final norm and the head are dropped, never computed.
        model.prune_intermediate_layers([block_index], prune_norm=True, prune_head=True)
        super().__init__(model.to(resolve_dtype(config.dtype)), chunk_size=config.chunk_size)
        self.config = config
        self.block_index = block_index
        self._data_config = resolve_data_config(model=model)

    @property
    def data_config(self) -> dict[str, Any]:
        """``dict(image_size, mean, std)`` the clip loader must use for these weights."""
        height, width = self.model.patch_embed.img_size
        return dict(
            image_size=height if height == width else (height, width),
            mean=tuple(self._data_config["mean"]),
            std=tuple(self._data_config["std"]),
        )

    @property
    def output_dim(self) -> int:
        return self.model.embed_dim

    @property
    def num_tokens(self) -> int:
        """N: prefix tokens (class, registers) + patches per frame."""
        return self.model.num_prefix_tokens + self.model.patch_embed.num_patches

    @property
    def dtype(self) -> torch.dtype:
        return self.model.patch_embed.proj.weight.dtype

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """images [K, C, H, W] -> tokens [K, N, D], in one pass (no chunking)."""
        weight = self.model.patch_embed.proj.weight
        (spatial, prefix), = self.model.forward_intermediates(
            images.to(device=weight.device, dtype=weight.dtype),
            indices=1,  # after pruning, the last kept block is the one asked for
            return_prefix_tokens=True,
            output_fmt="NLC",
            intermediates_only=True,
        )
        return torch.cat([prefix, spatial], dim=1)
