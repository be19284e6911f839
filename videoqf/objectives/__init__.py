"""Losses over the model's public API, one per stage objective (``StageConfig.objective``)."""
from __future__ import annotations

from torch import nn

from videoqf.objectives.caption import CaptionLoss
from videoqf.objectives.stage1 import Stage1Loss

def _stage1(model) -> nn.Module:
    if model.tokenizer is None:
        raise ValueError("the stage1 objective needs the Q-Former's text tokenizer (model.tokenizer)")
    if not model.backend.head.config.text_branch:
        raise ValueError("the stage1 objective needs the head Q-Former's text side, which this model has none of "
                         "(a released captioning folder loaded without a Q-Former tokenizer)")
    return Stage1Loss(model.config.objectives)


def _caption(model) -> nn.Module:
    if model.bridge is None:
        raise ValueError("the caption objective needs model.llm (a local LLM directory or config)")
    return CaptionLoss()


OBJECTIVES = {"stage1": _stage1, "caption": _caption}  # StageConfig.objective -> builder(model)


def build_objective(name: str, model) -> nn.Module:
    """The loss module of objective ``name`` for ``model`` (its ``config.objectives`` for stage 1)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; expected one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name](model)


class ModelWithLoss(nn.Module):
    """What the trainer trains: ``forward(batch)`` is ``objective(model, batch)`` (the trainer's contract)."""

    def __init__(self, model: nn.Module, objective: nn.Module):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: dict) -> dict:
        return self.objective(self.model, batch)
