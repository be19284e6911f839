"""``spatiotemporal``: one Q-Former that queries space and time at once, with FFN experts (Video Q-Former).

frame features --ln_vision--> attentive pooling (segment importance; tokens reweighted, see
modules/pooling.py; ``attentive_pooling: false`` skips it) --> optional spatial average pooling to
``tokens_per_frame`` --> learned temporal position embedding (width Dv, one vector per frame added to all its
tokens for the queries that read time; stretched past ``max_frames``) --> ONE Q-Former (the head, with the
text branch) cross-attending to all frames' tokens [B, T*N', Dv] (masked frames masked) --> its queries are
the tokens.

FFN experts (in the spirit of BLIP-2's separate query / text FFNs; see modules/ffn.py): the queries are split,
in order, into ``group_sizes`` = [spatial, temporal, semantic], each group with its FFN expert (SP-FFN, T-FFN,
SM-FFN); the text (VTC / VTM / VTG, instructions) shares SM-FFN with the semantic queries, the query-text path
where video and language meet (as BLIP-2's text FFN). Self-attention and cross-attention are shared.

Roles by what a query reads (``timed_experts``, our design): the groups named there cross-attend to the frame
tokens WITH each frame's position embedding added (``QFormerConfig.timed_groups``), the others to the same
tokens WITHOUT it, so what they read of the frames is the same for any frame order. ``timed_experts:
[temporal, semantic]`` makes the spatial queries read appearance alone and T-FFN / SM-FFN what the frames say of
time; self-attention stays shared, so a spatial query may still learn order from the others in a later layer
(``benchmarks/expert_probe.py`` measures what each group carries). The default, all three, adds the embedding
to every token: with the roles the head tells a clip from its reordered partner less often on the embedded
world (docs/decisions.md, 2026-12-06).
A split costs one more cross-attention call per layer (the timed rows apart) and per-frame key/value shifts.
``experts: false`` gives BLIP-2's routing (one FFN for all queries, one for text) and the position embedding
added to every token (every query reads time) for comparison.
An expert Q-Former keeps BLIP-2's layout, so BLIP-2 / BERT weights load into it (see
videoqf.qformer.convert: SP-FFN and T-FFN start from the query FFN, SM-FFN from the text FFN).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from einops import rearrange, repeat
from torch import nn

from videoqf.backends.base import HeadInputs, VideoBackend, VideoTokens, check_frames, run_head
from videoqf.backends.presets import SizePreset
from videoqf.backends.registry import register_backend
from videoqf.modules.pooling import AttentivePooling, spatial_pool
from videoqf.modules.position import TemporalPositionEmbedding
from videoqf.qformer import QFormer, QFormerConfig

EXPERTS = ["spatial", "temporal", "semantic"]


@dataclass
class SpatioTemporalConfig:
    """Defaults: BLIP-2-size Q-Former over EVA ViT-g tokens (1408 wide), 32 queries as 12/12/8.

    ``qformer`` keeps BLIP-2's routing fields; the expert routing is set here (``experts``,
    ``group_sizes``, ``timed_experts``: the groups whose queries read each frame's time), in one place.
    """

    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    experts: bool = True
    group_sizes: list[int] = field(default_factory=lambda: [12, 12, 8])
    timed_experts: list[str] = field(default_factory=lambda: list(EXPERTS))
    attentive_pooling: bool = True
    segment_frames: int = 1
    pooling_hidden: int = 256
    tokens_per_frame: int = 0
    temporal_pe: bool = True
    max_frames: int = 32

    def __post_init__(self) -> None:
        if list(self.qformer.query_experts) != ["query"] or self.qformer.text_expert != "text":
            raise ValueError(
                "spatiotemporal.qformer.query_experts / text_expert must stay BLIP-2's; set the routing with "
                "spatiotemporal.experts and spatiotemporal.group_sizes"
            )
        if self.experts and (len(self.group_sizes) != 3 or sum(self.group_sizes) != self.qformer.num_queries):
            raise ValueError(
                f"spatiotemporal.group_sizes {list(self.group_sizes)} must be 3 sizes (spatial, temporal, "
                f"semantic) summing to qformer.num_queries={self.qformer.num_queries}"
            )
        if self.experts and not (self.timed_experts and set(self.timed_experts) <= set(EXPERTS)):
            raise ValueError(f"spatiotemporal.timed_experts {list(self.timed_experts)}: one or more of {EXPERTS}")

    @property
    def head_config(self) -> QFormerConfig:
        if not self.experts:
            return self.qformer
        timed = [] if set(self.timed_experts) == set(EXPERTS) else list(self.timed_experts)  # all: time on the tokens
        return replace(self.qformer, query_experts=list(EXPERTS), query_group_sizes=list(self.group_sizes),
                       text_expert="semantic", timed_groups=timed)

    @classmethod
    def preset(cls, p: SizePreset) -> "SpatioTemporalConfig":
        """Three expert groups of half the preset's query count each."""
        group = p.qformer["num_queries"] // 2
        return cls(qformer=p.q(num_queries=3 * group), group_sizes=[group] * 3, pooling_hidden=p.pooling_hidden,
                   max_frames=p.max_frames)


class SpatioTemporalBackend(VideoBackend):
    def __init__(self, config: SpatioTemporalConfig):
        width = config.qformer.encoder_width
        super().__init__(vision_width=width)
        self.config = config
        self.pooling = (
            AttentivePooling(dim=width, hidden=config.pooling_hidden, segment_frames=config.segment_frames)
            if config.attentive_pooling
            else None
        )
        self.frame_position = (
            TemporalPositionEmbedding(num_positions=config.max_frames, dim=width) if config.temporal_pe else None
        )
        self.head = QFormer(config.head_config)

    def num_output_tokens(self, num_frames: int, *, audio: bool = False) -> int:
        return self.config.qformer.num_queries

    def parameter_groups(self) -> dict[str, list[nn.Module]]:
        parts = {"pooling": self.pooling, "temporal_pe": self.frame_position}
        return {name: [module] for name, module in parts.items() if module is not None}

    def head_inputs(self, frame_features, frame_mask) -> HeadInputs:
        frame_mask = check_frames(frame_features, frame_mask, self.vision_width)
        features = self.ln_vision(frame_features)
        weights = None
        if self.pooling is not None:
            features, weights = self.pooling(features, frame_mask)
        features = spatial_pool(features, self.config.tokens_per_frame)
        time = None if self.frame_position is None else self.frame_position(frame_mask)  # [B, T, Dv]
        if time is not None and not self.head.config.timed_groups:  # no roles: every query reads the time
            features, time = features + time[:, :, None], None
        return HeadInputs(tokens=rearrange(features, "b t n d -> b (t n) d"),
                          mask=repeat(frame_mask, "b t -> b (t n)", n=features.shape[2]), time=time,
                          frame_weights=weights)

    def forward(self, frame_features, frame_mask, *, audio_tokens=None, audio_mask=None, text_ids=None,
                text_mask=None) -> VideoTokens:
        inputs = self.head_inputs(frame_features, frame_mask)
        context = self.head.encode_context(inputs.tokens, inputs.mask, time=inputs.time)
        tokens, cache = run_head(self.head, context, text_ids, text_mask)
        return VideoTokens(
            tokens=tokens, mask=inputs.mask.new_ones(tokens.shape[:2]), context=context,
            head_queries=tokens.shape[1], query_cache=cache, frame_weights=inputs.frame_weights,
        )


@register_backend("spatiotemporal", config=SpatioTemporalConfig)
def spatiotemporal(config: SpatioTemporalConfig) -> SpatioTemporalBackend:
    return SpatioTemporalBackend(config)
