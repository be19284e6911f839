"""Attentive pooling of frame tokens: ``V_hat = attentive_pool(V)`` of the spatio-temporal Video Q-Former.

Design (ours; the Video Q-Former description only says "score the importance of each frame or segment
and weight the frame tokens by it"):

1. Each frame is summarised by the mean of its tokens; a segment of ``segment_frames`` consecutive frames
   by the mean of its real frames' summaries.
2. A small MLP (Linear -> GELU -> Linear) scores each segment; a softmax over the real segments of the
   clip gives weights ``w_s`` (a masked frame has weight 0; a segment with no real frame too).
3. Every token of segment ``s`` is multiplied by ``S * w_s`` (``S`` real segments), so uniform weights
   leave the tokens as they were, and the Q-Former's cross-attention keys of an important segment grow
   (sharper attention to it) while those of an unimportant one shrink towards 0. The scores are
   trained through that product by whatever loss follows; nothing supervises them directly.
4. Optionally (``tokens_per_frame``), patch tokens are average-pooled over space to a ``s x s`` grid
   (a leading [CLS] token, recognised by ``N = g*g + 1``, is kept), which bounds the cost of a
   Q-Former that attends to all frames' tokens at once.

Notation: B batch, T frames, N tokens per frame, D width.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where ``mask`` is True; exactly 0 elsewhere (all-False rows give 0)."""
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.nan_to_num(weights, nan=0.0)


class AttentivePooling(nn.Module):
    """Importance weights over frames / segments and the reweighted frame tokens.

    forward(tokens [B, T, N, D], frame_mask [B, T] bool) -> (tokens [B, T, N, D], frame_weights [B, T]);
    ``frame_weights`` is each frame's segment weight ``w_s`` (rows sum to 1 over segments).
    """

    def __init__(self, *, dim: int, hidden: int, segment_frames: int = 1):
        super().__init__()
        if segment_frames < 1:
            raise ValueError(f"segment_frames must be >= 1, got {segment_frames}")
        self.segment_frames = segment_frames
        # no bias on the last Linear: the softmax ignores a shift of all scores
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1, bias=False))

    def forward(self, tokens: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = tokens.shape[1]
        pad = -frames % self.segment_frames
        frame_mask = frame_mask.bool()
        valid = F.pad(frame_mask, (0, pad)).to(tokens.dtype)  # [B, T + pad]
        summary = F.pad(reduce(tokens, "b t n d -> b t d", "mean"), (0, 0, 0, pad)) * valid[..., None]
        seg_sum = reduce(summary, "b (s k) d -> b s d", "sum", k=self.segment_frames)
        seg_count = reduce(valid, "b (s k) -> b s", "sum", k=self.segment_frames)
        seg_mask = seg_count > 0
        seg_summary = seg_sum / seg_count.clamp(min=1)[..., None]
        weights = masked_softmax(self.score(seg_summary).squeeze(-1), seg_mask)  # [B, S]
        scale = weights * seg_mask.sum(dim=1, keepdim=True)
        frame_scale = rearrange(scale[..., None].expand(-1, -1, self.segment_frames), "b s k -> b (s k)")
        frame_weights = rearrange(weights[..., None].expand(-1, -1, self.segment_frames), "b s k -> b (s k)")
        frame_scale = frame_scale[:, :frames] * frame_mask
        frame_weights = frame_weights[:, :frames] * frame_mask
        return tokens * frame_scale[..., None, None], frame_weights


def patch_grid(num_tokens: int) -> tuple[bool, int]:
    """(has a leading [CLS], grid side g) of a frame of ``num_tokens`` = g*g or g*g + 1 tokens."""
    has_cls = math.isqrt(num_tokens - 1) ** 2 == num_tokens - 1 and math.isqrt(num_tokens) ** 2 != num_tokens
    grid = math.isqrt(num_tokens - has_cls)
    if grid * grid != num_tokens - has_cls:
        raise ValueError(f"frames have {num_tokens} tokens: not a square patch grid (optionally with one [CLS])")
    return has_cls, grid


def spatial_pool(tokens: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """Average-pool each frame's patch grid to ``tokens_per_frame`` (a square number) tokens.

    tokens [B, T, N, D] with N = g*g (or g*g + 1, a leading [CLS] kept) -> [B, T, N', D].
    ``tokens_per_frame = 0`` (or >= the grid) keeps the tokens as they are.
    """
    if tokens_per_frame == 0:
        return tokens
    side = math.isqrt(tokens_per_frame)
    if side * side != tokens_per_frame:
        raise ValueError(f"tokens_per_frame={tokens_per_frame} must be a square number (s*s grid)")
    has_cls, grid = patch_grid(tokens.shape[2])
    if side >= grid:
        return tokens
    patches = rearrange(tokens[:, :, has_cls:], "b t (h w) d -> (b t) d h w", h=grid)
    pooled = rearrange(
        F.adaptive_avg_pool2d(patches, side), "(b t) d h w -> b t (h w) d", b=tokens.shape[0]
    )
    return torch.cat([tokens[:, :, :1], pooled], dim=2) if has_cls else pooled
