"""A run's whole configuration: ``model``, ``data``, ``eval``, ``train`` and ``stages`` sections.

Loaded with ``videoqf.config.load_config`` from a YAML file in ``configs/`` plus ``key.sub=value``
overrides; every key is checked against these dataclasses.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from videoqf.data.config import DataConfig
from videoqf.models.config import ModelConfig
from videoqf.train.config import TrainConfig


@dataclass
class EvalConfig:
    """annotations: held-out clips (JSONL etc., as ``data.annotations``); pairs: the synthetic world's
    ``pairs.json`` (order / sound pairs) or empty; rerank_k: contrastive candidates re-scored by the
    matching head; max_clips: evaluate on at most this many clips (0: all); captions_shown: held-out clips
    printed with reference and generated captions."""

    annotations: str = ""
    pairs: str = ""
    rerank_k: int = 16
    batch_size: int = 16
    max_clips: int = 0
    max_new_tokens: int = 32
    num_beams: int = 1
    captions_shown: int = 5


@dataclass
class StagesConfig:
    """Which stages run (``stage``: "1", "2" or "both") and the optimizer steps and learning rate of each.

    stage1_weight_decay / stage2_weight_decay: AdamW's decay in that stage (None: ``train.weight_decay``).

    stage1_trainable / stage2_trainable: ``train.trainable`` glob patterns for that stage only (empty:
    ``train.trainable``), e.g. MiniGPT-4 trains the backend in stage 1 and only ``bridge.projector.*``
    in stage 2. They narrow what the stage leaves trainable (``VideoLanguageModel.set_stage``).
    """

    stage: str = "both"
    stage1_steps: int = 300
    stage1_lr: float = 1e-4
    stage2_steps: int = 300
    stage2_lr: float = 1e-4
    stage1_weight_decay: float | None = None
    stage2_weight_decay: float | None = None
    stage1_trainable: list[str] = field(default_factory=list)
    stage2_trainable: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.stage not in ("1", "2", "both"):
            raise ValueError(f"stages.stage must be '1', '2' or 'both', got {self.stage!r}")

    @property
    def selected(self) -> list[int]:
        return [1, 2] if self.stage == "both" else [int(self.stage)]


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
