"""Toy regression model and map-style dataset for the trainer tests (and tests/_dist_train.py).

The model follows the trainer's contract: ``model(batch) -> {"loss", "logs", "query_output"}``. It has
a frozen "encoder" (requires_grad False, like the frozen image encoder / LLM) and dropout, so exact
resume depends on restoring the RNG. The loss is a batch mean, so 2 ranks x m = 1 rank x 2m.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from videoqf.train.config import TrainConfig

DIM, QUERIES = 8, 4


@dataclass(frozen=True)
class ToyRun:
    """A toy run's trainer settings and the folder it writes (the trainer takes the two apart); the settings'
    fields read through (``run.max_steps``)."""

    config: TrainConfig
    output_dir: str

    def __getattr__(self, name):
        return getattr(self.config, name)


class ToyDataset(Dataset):
    """``n`` samples ``{"x": [DIM], "y": [1]}`` of a fixed linear target; ``nan_at`` items have NaN inputs.

    Each item adds a little noise from the global torch RNG (seeded per sample by the trainer), so the
    per-sample seeding is exercised too.
    """

    def __init__(self, n: int = 64, *, nan_at: tuple[int, ...] = ()) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, DIM, generator=g)
        w = torch.randn(DIM, generator=g)
        self.y = (self.x @ w).unsqueeze(1)
        self.nan_at = set(nan_at)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.x[i] + 0.01 * torch.randn(DIM)
        if i in self.nan_at:
            x = torch.full_like(x, math.nan)
        return {"x": x, "y": self.y[i]}


class ToyModel(nn.Module):
    """frozen encoder (Linear) -> trainable head with LayerNorm, dropout, query tokens -> scalar."""

    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = nn.Linear(DIM, DIM)
        # "pretrained" frozen weights: the same whatever the init seed, as if read from a weight file
        g = torch.Generator().manual_seed(42)
        with torch.no_grad():
            self.encoder.weight.copy_(torch.randn(DIM, DIM, generator=g) / DIM**0.5)
            self.encoder.bias.zero_()
        self.encoder.requires_grad_(False)
        self.query_tokens = nn.Parameter(torch.randn(1, QUERIES, DIM))
        self.hidden = nn.Linear(DIM, 32)
        self.norm = nn.LayerNorm(32)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(32, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict:
        feats = self.encoder(batch["x"])  # [B, DIM]
        h = self.drop(torch.relu(self.norm(self.hidden(feats))))  # [B, 32]
        pred = self.out(h)  # [B, 1]
        mse = ((pred - batch["y"]) ** 2).mean()
        l1 = (pred - batch["y"]).abs().mean()
        query_output = self.query_tokens + 0.1 * feats[:, None, :]  # [B, Q, DIM]
        return {"loss": mse + 0.1 * l1, "logs": {"mse": mse, "l1": l1}, "query_output": query_output}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
