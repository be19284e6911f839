"""AdamW parameter groups and the warm-up + cosine learning-rate schedule.

Weight-decay rule (after BLIP-2 / LAVIS ``get_optimizer_params``, which exempts ``p.ndim < 2``, biases
and norms): a trainable parameter gets no weight decay when it has fewer than 2 dimensions (biases,
LayerNorm/BatchNorm scales, scalar temperatures) or its name matches one of ``config.no_decay``
(default: query tokens and position embeddings). Everything else decays by ``config.weight_decay``.
Frozen parameters (``requires_grad=False``) are in no group, so they get no optimizer state.
Schedule: linear warm-up then cosine decay to ``lr * min_lr_ratio``, as in BLIP-2's
``LinearWarmupCosineLRScheduler``, written as a ``LambdaLR`` so DeepSpeed checkpoints its state.
"""
from __future__ import annotations

import math
from fnmatch import fnmatch

import torch
from torch import nn

from videoqf.train.config import TrainConfig


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Two AdamW groups over the trainable parameters: with and without weight decay (rule above)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or any(fnmatch(name, pattern) for pattern in config.no_decay)
        (no_decay if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, as one fused kernel on the CPU and CUDA (a step over the embedded
    default's many small tensors costs a third of the per-tensor loop's; benchmarks/RESULTS.md)."""
    groups = param_groups(model, config)
    fused = all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps, fused=fused)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak lr for optimizer step ``step`` (0-based).

    Warm-up reaches the peak at the last warm-up step (``(step + 1) / warmup_steps``, so the first step
    does not waste a zero lr); the cosine then goes from 1 at ``warmup_steps`` to ``min_lr_ratio`` at
    ``total_steps - 1`` and stays there.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine schedule over ``total_steps`` optimizer steps."""
    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps=config.warmup_steps, total_steps=total_steps,
                         min_lr_ratio=config.min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
