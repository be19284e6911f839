"""The one interface every video backend has: frame features in, ``VideoTokens`` out.

A backend sits between the frozen encoders and the projector / LLM (see DESIGN.md). It owns only
trainable parts: BLIP-2's ``ln_vision`` LayerNorm over the frozen features (and one over the audio
features), the Q-Former(s), position embeddings, pooling. Its ``head`` is the ``QFormer`` whose queries
give the video tokens; the head carries the text branch (text embeddings, text FFN, LM head), so the
stage-1 objectives (VTC / VTM / VTG, in ``videoqf.objectives``) work the same for every backend:

    vt = backend(frame_features, frame_mask)                         # VTC: vt.tokens vs text features
    backend.head(context=vt.context.select(idx), text_ids=..., text_mask=..., mode="bidirectional")  # VTM
    backend.head(text_ids=..., mode="causal", past_key_values=vt.query_cache)  # VTG (or with context=)

Backends without an audio branch do not read ``audio_tokens`` (the data pipeline may still pass them).

Notation: B batch, T frame slots, N tokens per frame, Dv vision width, S audio segments, Na tokens per
segment, Da audio width, L text length, M output tokens, H hidden width of the head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from videoqf.qformer import CrossContext, QFormer, QFormerCache


@dataclass
class VideoTokens:
    """What a backend hands on.

    tokens: [B, M, H] video tokens for the projector / LLM; the first ``head_queries`` are the head's
        query outputs (for ``cascaded`` with audio the audio tokens follow).
    mask: [B, M] bool, True for real tokens (masked tokens keep batch shapes fixed; never drop them).
    context: the head's cross-attention keys/values of this video, to re-run the head with text.
    head_queries: how many leading tokens are the head's query outputs.
    query_cache: the head's self-attention cache of the query pass (to continue with causal text, VTG);
        None when an instruction was given (queries that saw text cannot seed a causal pass) or when the
        backend's tokens are not one head pass over ``context`` (framewise, meanpool on more than one frame:
        re-run the head).
    frame_weights: [B, T] attentive-pooling weights (spatiotemporal), for inspection; else None.
    contrastive_tokens: [B, Q, H] the head's query outputs as VTC, the query-diversity regulariser and
        the query-collapse metric read them; left None it is ``tokens[:, :head_queries]``. A backend
        whose LLM tokens are not head queries (``pooled``: head_queries 0) sets it explicitly.
    contrastive_mask: [B, Q] bool, False for padded contrastive tokens (``framewise``: padded frames'
        queries); left None it is ``mask[:, :head_queries]``, or all True with explicit tokens.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    context: CrossContext
    head_queries: int
    query_cache: QFormerCache | None = None
    frame_weights: torch.Tensor | None = None
    contrastive_tokens: torch.Tensor | None = None
    contrastive_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.contrastive_tokens is None:
            if self.head_queries < 1:
                raise ValueError("VideoTokens needs head_queries >= 1 or explicit contrastive_tokens")
            self.contrastive_tokens = self.tokens[:, : self.head_queries]
            if self.contrastive_mask is None:
                self.contrastive_mask = self.mask[:, : self.head_queries].bool()
        if self.contrastive_mask is None:
            self.contrastive_mask = torch.ones(self.contrastive_tokens.shape[:2], dtype=torch.bool,
                                               device=self.contrastive_tokens.device)


@dataclass
class HeadInputs:
    """What a backend's head cross-attends to, before the head's key/value projections.

    tokens: [B, N, W]; mask: [B, N] bool, True for real tokens; time: [B, T, W] a time embedding per frame that
    the timed query groups read (``CrossContext.time``), or None; frame_weights: as ``VideoTokens.frame_weights``.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    time: torch.Tensor | None = None
    frame_weights: torch.Tensor | None = None


def check_frames(frame_features: torch.Tensor, frame_mask: torch.Tensor | None, width: int) -> torch.Tensor:
    """Validate ``frame_features`` [B, T, N, Dv] and return the frame mask [B, T] bool (all True if None)."""
    if frame_features.dim() != 4:
        raise ValueError(f"frame_features must be [B, T, N, Dv], got shape {tuple(frame_features.shape)}")
    if frame_features.shape[-1] != width:
        raise ValueError(f"frame_features are {frame_features.shape[-1]} wide but the backend expects {width}")
    if frame_mask is None:
        return torch.ones(frame_features.shape[:2], dtype=torch.bool, device=frame_features.device)
    if frame_mask.shape != frame_features.shape[:2]:
        raise ValueError(
            f"frame_mask {tuple(frame_mask.shape)} does not match frames {tuple(frame_features.shape[:2])}"
        )
    frame_mask = frame_mask.bool()
    if not bool(frame_mask.any(dim=1).all()):
        raise ValueError("every clip needs at least one real frame (a row of frame_mask is all False)")
    return frame_mask


def run_head(
    head: QFormer, context: CrossContext, text_ids: torch.Tensor | None, text_mask: torch.Tensor | None
) -> tuple[torch.Tensor, QFormerCache | None]:
    """The head's query pass: [B, Q, H] outputs and a cache for VTG, or, with an instruction
    (InstructBLIP), a bidirectional pass over ``[queries; instruction]`` and no cache."""
    if text_ids is None:
        out = head(context=context, use_cache=True)
        return out.query_output, out.past_key_values
    out = head(context=context, text_ids=text_ids, text_mask=text_mask, mode="bidirectional")
    return out.query_output, None


class VideoBackend(nn.Module):
    """Base of every backend: ``ln_vision``, the ``head`` contract and gradient checkpointing.

    Subclasses set ``self.head`` (a ``QFormer`` with a text branch) and implement ``forward`` and
    ``num_output_tokens``.

    forward(frame_features [B, T, N, Dv], frame_mask [B, T] bool, *, audio_tokens [B, S, Na, Da] = None,
            audio_mask [B, S] bool = None, text_ids [B, L] = None, text_mask [B, L] = None) -> VideoTokens
    """

    head: QFormer
    # Whether the first ``head_queries`` tokens are the head's query pass over ``VideoTokens.context``, so that
    # a copy of the head (``model.llm.own_head``) can stand in for it.
    tokens_are_head_pass: bool = True

    def __init__(self, *, vision_width: int, layer_norm_eps: float = 1e-5):
        super().__init__()
        self.vision_width = vision_width
        self.ln_vision = nn.LayerNorm(vision_width, eps=layer_norm_eps)

    @property
    def hidden_size(self) -> int:
        return self.head.config.hidden_size

    def num_output_tokens(self, num_frames: int, *, audio: bool = False) -> int:
        """M, the number of tokens handed to the LLM for a clip of ``num_frames`` frames."""
        raise NotImplementedError

    def head_inputs(self, frame_features: torch.Tensor, frame_mask: torch.Tensor | None) -> HeadInputs:
        """What the head cross-attends to for these frames. A backend whose tokens are one head pass over
        them implements it, so that the LLM's own head (``model.llm.own_head``) reads them without the
        backend's head pass (``splits_at_head``)."""
        raise NotImplementedError(f"{type(self).__name__} does not hand out its head's inputs")

    @property
    def splits_at_head(self) -> bool:
        return type(self).head_inputs is not VideoBackend.head_inputs

    def side_tokens(self, audio_tokens: torch.Tensor | None, audio_mask: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Tokens [B, K, H] and mask [B, K] that follow the head's queries (cascaded's audio), or None."""
        return None

    def parameter_groups(self) -> dict[str, list[nn.Module]]:
        """The backend's own parts by role, beyond ``backend`` / ``head`` / ``head.top`` (``videoqf.models.groups``)."""
        return {}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for module in self.modules():
            if isinstance(module, QFormer):
                module.set_grad_checkpointing(enable)
