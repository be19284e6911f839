"""Named parameter groups and the one place that decides what trains.

A model names its trainable parts by role (``VideoLanguageModel.parameter_groups``: ``backend``, ``head``,
``head.top``, ``retrieval_heads``, ``projector``, ``llm_head``, ``llm_head.top``, and the backend's own, e.g.
``frame_qformer``, ``temporal_pe``, ``audio_branch``), resolved from its structure. A training stage lists the
groups it trains and those it keeps frozen among them (``StageConfig.train`` / ``freeze``); ``lock`` applies
that and nothing else changes ``requires_grad``. Parts that never train (the frozen encoders, the LLM, a fixed
temperature) are in no group and stay frozen. Modules left wholly frozen run in eval mode (no dropout).
"""
from __future__ import annotations

from collections.abc import Iterable

from torch import nn


class GroupError(ValueError):
    """A stage names a group the model does not have, or trains nothing."""


def named_groups(backend: nn.Module, retrieval_heads: nn.Module, projector: nn.Module | None,
                 llm_head: nn.Module | None) -> dict[str, list[nn.Module]]:
    """The model's groups from its parts (``projector`` / ``llm_head`` None when the model has none)."""
    groups = {"backend": [backend], "head": [backend.head], "head.top": [backend.head.layers[-1]],
              "retrieval_heads": [retrieval_heads], **backend.parameter_groups()}
    if projector is not None:
        groups["projector"] = [projector]
    if llm_head is not None:
        groups.update({"llm_head": [llm_head], "llm_head.top": [llm_head.layers[-1]]})
    return groups


def check_group_names(groups: dict, train: list[str], freeze: list[str], where: str) -> None:
    for name in [*train, *freeze]:
        if name not in groups:
            raise GroupError(f"{where}: no parameter group {name!r} in this model; it has {sorted(groups)}")


def group_parameters(modules: Iterable[nn.Module]) -> dict[int, nn.Parameter]:
    return {id(p): p for module in modules for p in module.parameters()}


def lock(model: nn.Module, train: list[str], freeze: list[str] = (), *, where: str = "stage") -> list[str]:
    """Make exactly the parameters of the ``train`` groups, less those of the ``freeze`` groups, trainable.

    ``model`` has ``parameter_groups() -> {name: [modules]}`` and ``fixed_parameters`` (names that never
    train). Returns the trainable parameter names. ``where`` names the config entry in errors.
    """
    groups = model.parameter_groups()
    check_group_names(groups, train, freeze, where)
    fixed = model.fixed_parameters
    chosen = {}
    for name in train:
        found = group_parameters(groups[name])
        if not found:
            raise GroupError(f"{where}: parameter group {name!r} has no parameters in this model")
        chosen.update(found)
    for name in freeze:
        for key in group_parameters(groups[name]):
            chosen.pop(key, None)
    trainable = []
    for pname, p in model.named_parameters():
        on = id(p) in chosen and pname not in fixed
        p.requires_grad_(on)
        if on:
            trainable.append(pname)
    if not trainable:
        raise GroupError(f"{where}: trains nothing (train={list(train)}, freeze={list(freeze)})")
    model.frozen_modules = [m for modules in groups.values() for m in modules
                            if not any(p.requires_grad for p in m.parameters())]
    model.train(model.training)
    return trainable
