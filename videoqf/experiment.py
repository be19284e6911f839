"""A run's whole configuration: ``model``, ``data``, ``eval``, ``train`` and ``stages`` sections.

``stages`` maps a name (its run folder) to a ``StageConfig``, in training order; adding a stage is one entry.
``run_stages`` picks some of them (``tools/train_video.py --stage``); empty runs them all.

Loaded with ``videoqf.config.load_config`` from a YAML file in ``configs/`` plus ``key.sub=value``
overrides; every key is checked against these dataclasses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from videoqf.backends import BACKENDS, backend_config, build_backend
from videoqf.config import ConfigError, load_config
from videoqf.data.config import DataConfig
from videoqf.data.synthetic.instructions import check_tasks
from videoqf.llm.config import MAX_NEW_TOKENS
from videoqf.models.config import ModelConfig
from videoqf.models.groups import GroupError, check_group_names, named_groups
from videoqf.objectives import OBJECTIVES
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
    max_new_tokens: int = MAX_NEW_TOKENS
    num_beams: int = 1
    captions_shown: int = 5


@dataclass
class StageConfig:
    """One training stage: its loss, budget and which named parameter groups train.

    objective: "stage1" (VTC / VTM / VTG on the head's text branch) or "caption" (the frozen LLM's
        captioning loss); ``videoqf.objectives.OBJECTIVES`` builds it.
    steps / lr / weight_decay / warmup_steps: the trainer's for this stage; left empty, ``train.*``'s.
    train: parameter groups this stage trains (``VideoLanguageModel.parameter_groups``: by role, e.g.
        ``backend``, ``retrieval_heads``, ``projector``, ``llm_head.top``, ``audio_branch``).
    freeze: groups kept frozen although a ``train`` group holds them (e.g. ``frame_qformer`` inside ``backend``).
    tasks: instruction tasks of a caption stage (``videoqf.data.synthetic.instructions``): each item is one
        task's question (the LLM's prompt, and the Q-Former's when instruction-aware) and its answer (the target).
    """

    objective: str = "stage1"
    steps: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup_steps: int | None = None
    train: list[str] = field(default_factory=list)
    freeze: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_tasks(self.tasks)
        if self.tasks and self.objective != "caption":
            raise ValueError(f"tasks {list(self.tasks)}: instruction tasks are for a caption stage, not {self.objective!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective {self.objective!r}: expected one of {sorted(OBJECTIVES)}")
        if not self.train:
            raise ValueError("a stage needs train: [group, ...] (the parameter groups it trains)")


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stages: dict[str, StageConfig] = field(default_factory=dict)
    run_stages: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = [name for name in self.run_stages if name not in self.stages]
        if unknown:
            raise ValueError(f"run_stages {unknown}: no such stage; stages are {list(self.stages)}")

    @property
    def selected_stages(self) -> list[str]:
        """The stages this run trains, in the config's order (``run_stages``, else all)."""
        return [name for name in self.stages if not self.run_stages or name in self.run_stages]


def check_model_sections(cfg: ExperimentConfig) -> None:
    """What can be checked before any data is made: the backend section against the variant's config class,
    and every stage's group names against the model's groups (the backend built on the meta device)."""
    if cfg.model.variant not in BACKENDS:
        raise ConfigError(f"model.variant: unknown backend {cfg.model.variant!r}; registered: {sorted(BACKENDS)}")
    try:
        backend_cfg = backend_config(cfg.model.variant, cfg.model.backend, preset=cfg.model.preset)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or getattr(err, "key", None)
        raise ConfigError(f"model.backend.{key}: {str(err).splitlines()[0]}") from None
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model.backend ({cfg.model.variant}): {err}") from None
    if not cfg.stages:
        raise ConfigError("stages: the config has no stage (give stages: {NAME: {objective: ..., train: [...]}})")
    with torch.device("meta"):
        backend = build_backend(cfg.model.variant, backend_cfg)
    llm = cfg.model.llm
    reads_text = [f"stages.{n}" for n in cfg.selected_stages if cfg.stages[n].objective == "stage1"]
    reads_text += ["model.llm.instruction_aware"] if llm is not None and llm.instruction_aware else []
    if reads_text and not backend.head.config.text_branch:
        raise ConfigError(f"{', '.join(reads_text)}: the head Q-Former reads text there, but its text_branch is off")
    groups = named_groups(backend, nn.Module(), nn.Module() if llm is not None else None,
                          backend.head if llm is not None and llm.own_head else None)
    for name, stage in cfg.stages.items():
        try:
            check_group_names(groups, stage.train, stage.freeze, f"stages.{name}")
        except GroupError as err:
            raise ConfigError(str(err)) from None


def load_experiment(files: Sequence[str | Path], overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The experiment of ``files`` and ``overrides`` (``videoqf.config.load_config``), every section checked."""
    cfg = load_config(ExperimentConfig, files, overrides)
    check_model_sections(cfg)
    return cfg
