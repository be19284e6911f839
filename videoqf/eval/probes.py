"""Linear probes of what a representation carries about the synthetic world's events.

Labels are each event slot's colour, shape and action (with the direction of "moves"); ``ridge_accuracy`` fits a
closed-form probe (frozen features), ``probe_loss`` trains read-outs beside a backend (``benchmarks/``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from videoqf.data.synthetic.vocab import COLOURS, DIRECTIONS, SHAPES

EVENT_ACTIONS = ["appears", *(f"moves {d}" for d in DIRECTIONS), "turns"]
ATTRIBUTES = ("colour", "shape", "action")
SLOTS = 3
CLASSES = (len(COLOURS), len(SHAPES), len(EVENT_ACTIONS))


def event_labels(record: dict) -> list[int]:
    """[colour, shape, action] of event slots 1..3 (-1 where the clip has fewer events)."""
    out = []
    events = record["spec"]["events"]
    for k in range(SLOTS):
        if k >= len(events):
            out += [-1] * len(ATTRIBUTES)
            continue
        e = events[k]
        action = e["action"] if e["action"] != "moves" else f"moves {e['direction']}"
        out += [list(COLOURS).index(e["colour"]), SHAPES.index(e["shape"]), EVENT_ACTIONS.index(action)]
    return out


def ridge_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   ridge: float) -> float:
    """Held-out accuracy of a one-vs-rest ridge probe (dual form: more features than clips); NaN where the
    training or held-out side has no labelled clip (a small world may have none with two colours)."""
    keep, keep_test = train_y >= 0, test_y >= 0
    if not keep.any() or not keep_test.any():
        return math.nan
    x, y = train_x[keep], train_y[keep]
    targets = torch.nn.functional.one_hot(y, int(y.max()) + 1).double()
    gram = x @ x.T
    alpha = torch.linalg.solve(gram + ridge * gram.diagonal().mean() * torch.eye(len(x), dtype=gram.dtype),
                               targets - targets.mean(0))
    pred = (test_x[keep_test] @ x.T @ alpha).argmax(1)
    return (pred == test_y[keep_test]).double().mean().item()


def probe_loss(outputs: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over slots and attributes; slots a clip does not have (-1) are left out."""
    return sum(nn.functional.cross_entropy(o, labels[:, j], ignore_index=-1)
               for j, o in enumerate(outputs) if (labels[:, j] >= 0).any())
