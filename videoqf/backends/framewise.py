"""``framewise``: InstructBLIP-Video's baseline (Dai et al., 2023, arXiv:2305.06500, applied per frame).

BLIP-2's image Q-Former (with its text branch: it is the head) runs on every frame with shared weights;
all frames' query outputs are concatenated, T*Q tokens for the LLM, with no temporal module. An
instruction, when given, goes to every frame (InstructBLIP's instruction-aware queries).

Stage-1 objectives (our choice): VTC uses the per-frame query tokens (all T*Q, masked like the frames);
VTM and VTG re-run the same head over ``context``, the keys/values of ALL frames' tokens at once
([B, T*N]), so one text is matched / generated against the whole clip. ``query_cache`` is None (the
tokens are not that pass's queries, so the objectives run the head on ``context``) unless every clip is one
frame, when they are. Both contexts come
from one key/value projection of the features (backends/frames.py).
"""
from __future__ import annotations

from einops import rearrange, repeat

from videoqf.backends.base import VideoTokens
from videoqf.backends.frames import FrameHeadBackend, FrameQFormerConfig
from videoqf.backends.registry import register_backend


class FramewiseBackend(FrameHeadBackend):
    def num_output_tokens(self, num_frames: int, *, audio: bool = False) -> int:
        return num_frames * self.config.qformer.num_queries

    def forward(self, frame_features, frame_mask, *, audio_tokens=None, audio_mask=None, text_ids=None,
                text_mask=None) -> VideoTokens:
        context, queries, frame_mask, cache = self.frame_pass(frame_features, frame_mask, text_ids, text_mask)
        tokens = rearrange(queries, "b t q h -> b (t q) h")
        mask = repeat(frame_mask, "b t -> b (t q)", q=queries.shape[2])
        return VideoTokens(tokens=tokens, mask=mask, context=context, head_queries=tokens.shape[1], query_cache=cache)


@register_backend("framewise", config=FrameQFormerConfig)
def framewise(config: FrameQFormerConfig) -> FramewiseBackend:
    return FramewiseBackend(config)
