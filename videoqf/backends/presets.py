"""Named sizes of the small backends, in one place.

A variant or recipe file names a preset (``model.preset``) and states only what makes it itself; each backend
config builds its preset sizes from a ``SizePreset`` (``Config.preset(p)``). "default" is not here: it is each
config class's own defaults (BLIP-2 / Video-LLaMA / Video-ChatGPT sizes).

Weights start at N(0, 0.08), about 1/sqrt(width) at these widths, not BERT's 0.02 (tuned for 768): at 0.02 a
128-wide layer's attention logits stay near 0, attention stays uniform and learns slowly (docs/decisions.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from videoqf.qformer import QFormerConfig


@dataclass(frozen=True)
class SizePreset:
    """qformer: fields every Q-Former of the backend shares; audio_qformer: the audio branch's own on top.
    vision_width / audio_width: the frozen encoders' token widths the first Q-Formers read."""

    qformer: dict[str, Any]
    vision_width: int
    audio_width: int
    audio_qformer: dict[str, Any] = field(default_factory=dict)
    max_frames: int = 8
    max_audio_segments: int = 4
    pooling_hidden: int = 16
    spatial_grid: int = 2

    def q(self, **overrides) -> QFormerConfig:
        """A Q-Former of this preset reading the vision encoder's tokens; ``overrides`` replace any field."""
        return QFormerConfig(**{"encoder_width": self.vision_width, **self.qformer, **overrides})

    def audio_q(self, **overrides) -> QFormerConfig:
        return self.q(encoder_width=self.audio_width, text_branch=False, **{**self.audio_qformer, **overrides})


_SMALL = dict(num_layers=2, num_heads=4, cross_attention_frequency=1, initializer_range=0.08)

PRESETS: dict[str, SizePreset] = {
    # tests: random features of these widths
    "tiny": SizePreset(qformer=dict(_SMALL, hidden_size=64, intermediate_size=128, num_queries=4, vocab_size=100,
                                    max_text_len=32),
                       vision_width=48, audio_width=40, audio_qformer=dict(hidden_size=32, num_queries=2)),
    # the embedded synthetic world: vit_tiny features (192 wide); dropout off, since at init the clips' query
    # outputs differ by little and dropout noise drowns that
    "synthetic": SizePreset(qformer=dict(_SMALL, hidden_size=128, intermediate_size=256, num_queries=8, vocab_size=128,
                                         max_text_len=48, hidden_dropout=0.0, attention_dropout=0.0),
                            vision_width=192, audio_width=192,
                            audio_qformer=dict(hidden_size=64, intermediate_size=128, num_queries=4),
                            max_audio_segments=2, spatial_grid=6),
}


def size_preset(name: str) -> SizePreset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected 'default' or one of {sorted(PRESETS)}")
    return PRESETS[name]
