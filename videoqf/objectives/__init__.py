"""Losses over the model's public API, one per stage objective (``StageConfig.objective``)."""
from __future__ import annotations

from torch import nn

from videoqf.objectives.caption import CaptionLoss
from videoqf.objectives.stage1 import Stage1Loss

OBJECTIVES = ("stage1", "caption")


def build_objective(name: str, model) -> nn.Module:
    """The loss module of objective ``name`` for ``model`` (its ``config.objectives`` for stage 1)."""
    if name == "stage1":
        if model.tokenizer is None:
            raise ValueError("the stage1 objective needs the Q-Former's text tokenizer (model.tokenizer)")
        return Stage1Loss(model.config.objectives)
    if name == "caption":
        if model.bridge is None:
            raise ValueError("the caption objective needs model.llm (a local LLM directory or config)")
        return CaptionLoss()
    raise ValueError(f"unknown objective {name!r}; expected one of {OBJECTIVES}")


class ModelWithLoss(nn.Module):
    """What the trainer trains: ``forward(batch)`` is ``objective(model, batch)`` (the trainer's contract)."""

    def __init__(self, model: nn.Module, objective: nn.Module):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: dict) -> dict:
        return self.objective(self.model, batch)
