"""The per-frame Q-Former stage shared by ``cascaded``, ``framewise`` and ``meanpool``.

``FrameHeadBackend`` is the common part of the backends whose head IS the frame Q-Former (framewise,
meanpool): its config (``FrameQFormerConfig``) and the per-frame pass.

BLIP-2's image Q-Former is applied to every real frame of the batch at once: the real frames are
gathered to one batch of V frames (masked frame slots cost nothing and cannot leak), and the query
outputs are scattered back to [B, T, Q, H] with zeros in the masked slots.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import rearrange, repeat

from videoqf.backends.base import VideoBackend, check_frames, run_head
from videoqf.backends.presets import SizePreset
from videoqf.qformer import CrossContext, QFormer, QFormerCache, QFormerConfig


def clip_and_frame_contexts(
    qformer: QFormer, features: torch.Tensor, frame_mask: torch.Tensor
) -> tuple[CrossContext, CrossContext]:
    """One key/value projection of features [B, T, N, W] gives both contexts of ``qformer``:
    the whole clip ([B, T*N] tokens, masked frames masked) and each real frame ([V, N] tokens)."""
    frames, tokens = features.shape[1:3]
    clip = qformer.encode_context(
        rearrange(features, "b t n w -> b (t n) w"), repeat(frame_mask, "b t -> b (t n)", n=tokens)
    )

    def per_frame(x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "b h (t n) d -> b t h n d", t=frames)[frame_mask]

    return clip, CrossContext(kv=[(per_frame(k), per_frame(v)) for k, v in clip.kv], mask=None)


def frame_queries(
    qformer: QFormer,
    frame_context: CrossContext,
    frame_mask: torch.Tensor,
    text_ids: torch.Tensor | None = None,
    text_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Query outputs of every real frame, [B, T, Q, H] (zeros at masked slots).

    frame_context: the real frames' context ([V, ...], V = frame_mask.sum()), in frame_mask order.
    text_ids / text_mask: [B, L] instruction given to every frame of its clip (InstructBLIP-Video),
        in bidirectional mode; None for the plain query pass.
    """
    frames = frame_mask.shape[1]
    if text_ids is None:
        out = qformer(context=frame_context).query_output
    else:
        if text_mask is None:
            text_mask = torch.ones_like(text_ids, dtype=torch.bool)

        def per_frame(x: torch.Tensor) -> torch.Tensor:
            return repeat(x, "b l -> b t l", t=frames)[frame_mask]

        out = qformer(
            context=frame_context, text_ids=per_frame(text_ids), text_mask=per_frame(text_mask), mode="bidirectional"
        ).query_output
    full = out.new_zeros(*frame_mask.shape, *out.shape[1:])
    full[frame_mask] = out
    return full


@dataclass
class FrameQFormerConfig:
    """The head is BLIP-2's image Q-Former (default: BLIP-2 size, EVA ViT-g tokens, text branch)."""

    qformer: QFormerConfig = field(default_factory=QFormerConfig)

    @classmethod
    def preset(cls, p: SizePreset) -> "FrameQFormerConfig":
        return cls(qformer=p.q())


class FrameHeadBackend(VideoBackend):
    """A backend whose head is the frame Q-Former; subclasses turn the per-frame queries into tokens."""

    tokens_are_head_pass = False

    def __init__(self, config: FrameQFormerConfig):
        super().__init__(vision_width=config.qformer.encoder_width)
        self.config = config
        self.head = QFormer(config.qformer)

    def frame_pass(
        self, frame_features: torch.Tensor, frame_mask: torch.Tensor | None, text_ids, text_mask
    ) -> tuple[CrossContext, torch.Tensor, torch.Tensor, QFormerCache | None]:
        """-> (clip context [B, T*N], per-frame queries [B, T, Q, H] (zeros at masked slots), frame_mask, the
        head's query cache when every clip is one frame (else None))."""
        frame_mask = check_frames(frame_features, frame_mask, self.vision_width)
        context, frame_context = clip_and_frame_contexts(self.head, self.ln_vision(frame_features), frame_mask)
        if frame_mask.shape[1] == 1 and text_ids is None:
            # one frame (BLIP-2 on images): the frame pass is the head's pass over the clip context, so its
            # cache lets VTG run the text alone, as LAVIS's ITG does
            queries, cache = run_head(self.head, frame_context, None, None)
            return context, queries[:, None], frame_mask, cache
        return context, frame_queries(self.head, frame_context, frame_mask, text_ids, text_mask), frame_mask, None
