"""``pooled``: Video-ChatGPT's video features, no Q-Former (Maaz et al., 2023, arXiv:2306.05424).

frame features --ln_vision--> patch tokens [B, T, g*g, Dv] (a leading [CLS] dropped, as Video-ChatGPT
keeps the patch tokens only)
  temporal tokens: each frame's patches averaged             -> [B, T, Dv]  (masked frames masked)
  spatial tokens:  each patch position averaged over the real frames, the g x g grid average-pooled to
                   ``spatial_grid`` x ``spatial_grid``      -> [B, S, Dv]  (S = spatial_grid**2)
  tokens = Linear(Dv -> H)([temporal; spatial])              -> [B, T + S, H]: what the LLM reads.
Video-ChatGPT's one Linear maps straight to the LLM; here the backend's Linear maps to the width H that
every backend hands on, and the bridge's projector does the rest (two Linears compose to one).

The stage-1 objectives need a head with a text branch, which this model has not: the head here is a
small Q-Former over the pooled tokens whose query outputs feed VTC (``VideoTokens.contrastive_tokens``),
and which VTM / VTG re-run over the same tokens. Its queries never reach the LLM, so stage 1 trains the
pooled tokens (through the head's cross-attention) and stage 2 sees exactly Video-ChatGPT's tokens. An
instruction (InstructBLIP option) only changes the head's queries, not the tokens.

Notation as videoqf/backends/base.py; S spatial tokens, Q head queries.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from videoqf.backends.base import VideoBackend, VideoTokens, check_frames, run_head
from videoqf.backends.presets import SizePreset
from videoqf.backends.registry import register_backend
from videoqf.modules.pooling import patch_grid
from videoqf.qformer import QFormer, QFormerConfig


@dataclass
class PooledConfig:
    """Defaults: Video-ChatGPT's CLIP ViT-L/14 at 224 px (1024 wide, a 16 x 16 grid kept whole); the
    head is a 2-layer Q-Former with 32 queries over the 768-wide pooled tokens."""

    vision_width: int = 1024
    spatial_grid: int = 16
    head: QFormerConfig = field(
        default_factory=lambda: QFormerConfig(num_layers=2, cross_attention_frequency=1, encoder_width=768)
    )

    def __post_init__(self) -> None:
        if self.spatial_grid < 1:
            raise ValueError(f"pooled.spatial_grid must be >= 1, got {self.spatial_grid}")
        if self.head.encoder_width != self.head.hidden_size:
            raise ValueError(f"pooled.head.encoder_width={self.head.encoder_width} must equal its hidden_size="
                             f"{self.head.hidden_size}: the head reads the pooled tokens, which are that wide")

    @classmethod
    def preset(cls, p: SizePreset) -> "PooledConfig":
        return cls(vision_width=p.vision_width, spatial_grid=p.spatial_grid,
                   head=p.q(encoder_width=p.qformer["hidden_size"]))


class PooledBackend(VideoBackend):
    tokens_are_head_pass = False

    def __init__(self, config: PooledConfig):
        super().__init__(vision_width=config.vision_width)
        self.config = config
        self.proj = nn.Linear(config.vision_width, config.head.hidden_size)
        self.head = QFormer(config.head)

    def num_output_tokens(self, num_frames: int, *, audio: bool = False) -> int:
        return num_frames + self.config.spatial_grid**2

    def pool(self, features: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """features [B, T, N, Dv] -> [temporal; spatial] averages [B, T + S, Dv] (masked frames zeroed)."""
        has_cls, grid = patch_grid(features.shape[2])
        weight = frame_mask.to(features.dtype)
        patches = features[:, :, int(has_cls):] * weight[:, :, None, None]
        temporal = reduce(patches, "b t n d -> b t d", "mean")
        spatial = reduce(patches, "b t n d -> b n d", "sum") / reduce(weight, "b t -> b", "sum")[:, None, None]
        spatial = F.adaptive_avg_pool2d(rearrange(spatial, "b (h w) d -> b d h w", h=grid), self.config.spatial_grid)
        return torch.cat([temporal, rearrange(spatial, "b d h w -> b (h w) d")], dim=1)

    def forward(self, frame_features, frame_mask, *, audio_tokens=None, audio_mask=None, text_ids=None,
                text_mask=None) -> VideoTokens:
        frame_mask = check_frames(frame_features, frame_mask, self.vision_width)
        tokens = self.proj(self.pool(self.ln_vision(frame_features), frame_mask))
        spatial = self.config.spatial_grid**2
        mask = torch.cat([frame_mask, frame_mask.new_ones(frame_mask.shape[0], spatial)], dim=1)
        context = self.head.encode_context(tokens, mask)
        queries, cache = run_head(self.head, context, text_ids, text_mask)
        return VideoTokens(tokens=tokens, mask=mask, context=context, head_queries=0, query_cache=cache,
                           contrastive_tokens=queries)


@register_backend("pooled", config=PooledConfig)
def pooled(config: PooledConfig) -> PooledBackend:
    return PooledBackend(config)
