"""``cascaded``: Video-LLaMA's two-stage video Q-Former (Zhang et al., 2023, arXiv:2306.02858).

frame features --ln_vision--> frame Q-Former (BLIP-2's image Q-Former, shared over frames)
  --> + learned frame position embedding (32 positions; on the query outputs as Video-LLaMA, or on
        the frame features with ``pe_position="features"``; stretched past 32, see modules/position.py)
  --> video Q-Former (2 layers, cross-attention every layer, 32 queries) over all frames' query outputs
      (a masked frame's query tokens are masked) = the head, with the text branch
  [+ audio branch: ImageBind-style segment tokens --LayerNorm--> + segment position embedding (8)
     --> audio Q-Former (2 layers, 8 queries) --> Linear to the head's width when different;
     appended after the video tokens; a clip without audio gets those tokens masked, not dropped.]

Video-LLaMA freezes the image Q-Former (and ``ln_vision``): a stage's ``freeze: [frame_qformer]``.
Video-LLaMA gives the audio tokens their own LLM projection; here they share the video tokens' projector
after the Linear, so the LLM bridge stays the same for every backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from einops import rearrange, repeat
from torch import nn

from videoqf.backends.base import HeadInputs, VideoBackend, VideoTokens, check_frames, run_head
from videoqf.backends.presets import SizePreset
from videoqf.backends.frames import frame_queries
from videoqf.backends.registry import register_backend
from videoqf.modules.position import TemporalPositionEmbedding
from videoqf.qformer import QFormer, QFormerConfig


@dataclass
class CascadedConfig:
    """Defaults: BLIP-2's image Q-Former (EVA ViT-g, 1408 wide) and Video-LLaMA's video / audio
    Q-Formers (audio: ImageBind, 1024 wide, 8 segments)."""

    frame_qformer: QFormerConfig = field(default_factory=lambda: QFormerConfig(text_branch=False))
    video_qformer: QFormerConfig = field(
        default_factory=lambda: QFormerConfig(num_layers=2, cross_attention_frequency=1, encoder_width=768)
    )
    temporal_pe: bool = True
    pe_position: str = "queries"
    max_frames: int = 32
    audio: bool = True
    audio_qformer: QFormerConfig = field(
        default_factory=lambda: QFormerConfig(
            num_layers=2, cross_attention_frequency=1, encoder_width=1024, num_queries=8, text_branch=False
        )
    )
    max_audio_segments: int = 8

    def __post_init__(self) -> None:
        if self.pe_position not in ("queries", "features"):
            raise ValueError(f"cascaded.pe_position must be 'queries' or 'features', got {self.pe_position!r}")
        if self.video_qformer.encoder_width != self.frame_qformer.hidden_size:
            raise ValueError(
                f"cascaded.video_qformer.encoder_width={self.video_qformer.encoder_width} must equal "
                f"frame_qformer.hidden_size={self.frame_qformer.hidden_size} (it reads the frame queries)"
            )

    @classmethod
    def preset(cls, p: SizePreset) -> "CascadedConfig":
        return cls(
            frame_qformer=p.q(text_branch=False),
            video_qformer=p.q(encoder_width=p.qformer["hidden_size"]),
            max_frames=p.max_frames,
            audio_qformer=p.audio_q(),
            max_audio_segments=p.max_audio_segments,
        )


class AudioBranch(nn.Module):
    """audio_tokens [B, S, Na, Da], audio_mask [B, S] bool -> tokens [B, Qa, H], mask [B, Qa] bool."""

    def __init__(self, config: QFormerConfig, *, max_segments: int, out_width: int):
        super().__init__()
        self.norm = nn.LayerNorm(config.encoder_width)
        # BERT's 0.02 here: the unit-scale table helped the frames only (docs/decisions.md)
        self.segment_position = TemporalPositionEmbedding(num_positions=max_segments, dim=config.encoder_width,
                                                          init_std=0.02)
        self.qformer = QFormer(config)
        self.proj = nn.Linear(config.hidden_size, out_width) if config.hidden_size != out_width else nn.Identity()

    def forward(self, audio_tokens: torch.Tensor, audio_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if audio_tokens.dim() != 4:
            raise ValueError(f"audio_tokens must be [B, S, Na, Da], got shape {tuple(audio_tokens.shape)}")
        if audio_mask is None:
            audio_mask = torch.ones(audio_tokens.shape[:2], dtype=torch.bool, device=audio_tokens.device)
        audio_mask = audio_mask.bool()
        has_audio = audio_mask.any(dim=1)  # [B]
        x = self.norm(audio_tokens) + self.segment_position(audio_mask)[:, :, None]
        # A clip without audio attends to its (meaningless) slots so no attention row is empty; its
        # outputs are then zeroed and masked, so neither its tokens nor its gradient count.
        token_mask = repeat(audio_mask | ~has_audio[:, None], "b s -> b (s n)", n=x.shape[2])
        out = self.qformer(rearrange(x, "b s n d -> b (s n) d"), token_mask).query_output
        out = self.proj(out) * has_audio[:, None, None].to(out.dtype)
        return out, repeat(has_audio, "b -> b q", q=out.shape[1])


class CascadedBackend(VideoBackend):
    def __init__(self, config: CascadedConfig):
        super().__init__(vision_width=config.frame_qformer.encoder_width)
        self.config = config
        self.frame_qformer = QFormer(config.frame_qformer)
        self.head = QFormer(config.video_qformer)
        pe_width = (
            config.frame_qformer.encoder_width if config.pe_position == "features" else config.frame_qformer.hidden_size
        )
        self.frame_position = (
            TemporalPositionEmbedding(num_positions=config.max_frames, dim=pe_width) if config.temporal_pe else None
        )
        self.audio_branch = (
            AudioBranch(config.audio_qformer, max_segments=config.max_audio_segments, out_width=self.hidden_size)
            if config.audio
            else None
        )

    def parameter_groups(self) -> dict[str, list[nn.Module]]:
        groups = {"frame_qformer": [self.ln_vision, self.frame_qformer]}
        if self.frame_position is not None:
            groups["temporal_pe"] = [self.frame_position]
        if self.audio_branch is not None:
            groups["audio_branch"] = [self.audio_branch]
        return groups

    def num_output_tokens(self, num_frames: int, *, audio: bool = False) -> int:
        with_audio = audio and self.audio_branch is not None
        return self.config.video_qformer.num_queries + (self.config.audio_qformer.num_queries if with_audio else 0)

    def head_inputs(self, frame_features, frame_mask) -> HeadInputs:
        frame_mask = check_frames(frame_features, frame_mask, self.vision_width)
        position = self.frame_position(frame_mask)[:, :, None] if self.frame_position is not None else None
        if position is not None and self.config.pe_position == "features":
            context = self.frame_qformer.encode_context((self.ln_vision(frame_features) + position)[frame_mask],
                                                        reuse=False)
        else:
            context = self.frame_qformer.encode_context(frame_features[frame_mask], reuse=False, norm=self.ln_vision)
        # [B, T, Qf, Hf]; one pass over the frames, so the projections (and ln_vision) may fold into the queries
        queries = frame_queries(self.frame_qformer, context, frame_mask)
        if position is not None and self.config.pe_position == "queries":
            queries = queries + position
        return HeadInputs(tokens=rearrange(queries, "b t q h -> b (t q) h"),
                          mask=repeat(frame_mask, "b t -> b (t q)", q=queries.shape[2]))

    def side_tokens(self, audio_tokens, audio_mask) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.audio_branch is None or audio_tokens is None:
            return None
        return self.audio_branch(audio_tokens, audio_mask)

    def forward(self, frame_features, frame_mask, *, audio_tokens=None, audio_mask=None, text_ids=None,
                text_mask=None) -> VideoTokens:
        inputs = self.head_inputs(frame_features, frame_mask)
        context = self.head.encode_context(inputs.tokens, inputs.mask)
        tokens, cache = run_head(self.head, context, text_ids, text_mask)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        side = self.side_tokens(audio_tokens, audio_mask)
        if side is not None:
            tokens, mask = torch.cat([tokens, side[0]], dim=1), torch.cat([mask, side[1]], dim=1)
        return VideoTokens(
            tokens=tokens, mask=mask, context=context, head_queries=self.config.video_qformer.num_queries,
            query_cache=cache,
        )


@register_backend("cascaded", config=CascadedConfig)
def cascaded(config: CascadedConfig) -> CascadedBackend:
    return CascadedBackend(config)
