"""Configuration of the stage-1 objectives (VTC / VTM / VTG), after BLIP-2's Q-Former pre-training.

BLIP-2 (Li et al., 2023, "BLIP-2: Bootstrapping Language-Image Pre-training with Frozen Image
Encoders and Large Language Models") sums ITC + ITM + ITG with unit weights, projects to 256,
starts the temperature at 0.07 and clamps it to [0.001, 0.5], and smooths labels by 0.1 for the
contrastive and the generation loss. Those are the defaults here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_NAMES = ("vtc", "vtm", "vtg")


@dataclass
class ObjectivesConfig:
    """Weights and hyper-parameters of the stage-1 losses.

    A weight of 0 switches a loss off (the trainer should then skip computing it).

    Stability kit (``videoqf.objectives.stability``, both off by default):
    query_diversity_weight: weight of the query-diversity regulariser (mean squared off-diagonal cosine
        similarity of the head's query outputs) added to the stage-1 loss; 0 turns it off.
    adaptive_weighting: weigh VTC / VTM / VTG by learned uncertainty (Kendall et al., 2018) on top of the
        ``*_weight``s: each loss's term scaled by its weight, starting from the fixed weighted sum.
    """

    vtc_weight: float = 1.0
    vtm_weight: float = 1.0
    vtg_weight: float = 1.0
    embed_dim: int = 256
    temperature_init: float = 0.07
    temperature_min: float = 0.001
    temperature_max: float = 0.5
    learnable_temperature: bool = True
    vtc_label_smoothing: float = 0.1
    vtg_label_smoothing: float = 0.1
    gather_with_grad: bool = True
    query_diversity_weight: float = 0.0
    adaptive_weighting: bool = False

    def __post_init__(self) -> None:
        for name in LOSS_NAMES:
            if getattr(self, f"{name}_weight") < 0:
                raise ValueError(f"ObjectivesConfig.{name}_weight must be >= 0")
        if not 0 < self.temperature_min <= self.temperature_init <= self.temperature_max:
            raise ValueError(
                "ObjectivesConfig needs 0 < temperature_min <= temperature_init <= temperature_max, got "
                f"{self.temperature_min}, {self.temperature_init}, {self.temperature_max}"
            )
        for name in ("vtc_label_smoothing", "vtg_label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"ObjectivesConfig.{name} must lie in [0, 1)")
        if self.query_diversity_weight < 0:
            raise ValueError("ObjectivesConfig.query_diversity_weight must be >= 0")
        if self.embed_dim <= 0:
            raise ValueError("ObjectivesConfig.embed_dim must be positive")

    def weights(self) -> dict[str, float]:
        return {name: getattr(self, f"{name}_weight") for name in LOSS_NAMES}

    def total_loss(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of the losses given by name ("vtc", "vtm", "vtg").

        Every loss with a non-zero weight must be present; an unknown name is an error, so a
        misspelt key never drops a loss silently.
        """
        unknown = set(losses) - set(LOSS_NAMES)
        if unknown:
            raise KeyError(f"unknown loss names {sorted(unknown)}; expected a subset of {LOSS_NAMES}")
        missing = [name for name, w in self.weights().items() if w > 0 and name not in losses]
        if missing:
            raise KeyError(f"losses {missing} have a non-zero weight but were not computed")
        return sum(self.weights()[name] * value for name, value in losses.items())
