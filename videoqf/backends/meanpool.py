"""``meanpool``: BLIP-2's image Q-Former per frame, query outputs averaged over the real frames.

The simplest temporal model (as in the mean-pooling baselines of video-language papers, e.g.
CLIP4Clip's parameter-free variant, Luo et al., 2021): Q tokens whatever the clip length, no order.
Stage-1 objectives as ``framewise``: VTC on the Q averaged tokens; VTM / VTG re-run the head over all
frames' tokens at once (``context``), ``query_cache`` None unless every clip is one frame (BLIP-2 on images:
the frame pass is then the head's pass over ``context`` and VTG continues its cache).
"""
from __future__ import annotations

from einops import reduce

from videoqf.backends.base import VideoTokens
from videoqf.backends.frames import FrameHeadBackend, FrameQFormerConfig
from videoqf.backends.registry import register_backend


class MeanPoolBackend(FrameHeadBackend):
    def num_output_tokens(self, num_frames: int, *, audio: bool = False) -> int:
        return self.config.qformer.num_queries

    def forward(self, frame_features, frame_mask, *, audio_tokens=None, audio_mask=None, text_ids=None,
                text_mask=None) -> VideoTokens:
        context, queries, frame_mask, cache = self.frame_pass(frame_features, frame_mask, text_ids, text_mask)
        count = reduce(frame_mask.to(queries.dtype), "b t -> b", "sum")
        tokens = reduce(queries, "b t q h -> b q h", "sum") / count[:, None, None]
        return VideoTokens(tokens=tokens, mask=frame_mask.new_ones(tokens.shape[:2]), context=context,
                           head_queries=tokens.shape[1], query_cache=cache)


@register_backend("meanpool", config=FrameQFormerConfig)
def meanpool(config: FrameQFormerConfig) -> MeanPoolBackend:
    return MeanPoolBackend(config)
