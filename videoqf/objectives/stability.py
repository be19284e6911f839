"""The stability kit of stage 1: a query-diversity regulariser and uncertainty weighting of the losses.

- Query diversity (against query collapse, where every learned query ends up asking the same thing and
  the outputs turn parallel; the trainer's ``query_collapse`` metric measures it): the mean SQUARED
  off-diagonal cosine similarity of a clip's query outputs, averaged over the batch. It is 0 when the
  queries are pairwise orthogonal and 1 when they are all parallel; it equals
  ``||Q_n Q_n^T - I||_F^2 / (Q (Q - 1))`` for the row-normalised outputs ``Q_n``, so it is the soft
  orthogonality penalty of e.g. Bansal et al. (2018) on the outputs rather than the weights.
  Squared, so a pair of anti-parallel queries is penalised like a parallel pair and the gradient
  vanishes at orthogonality.
- Uncertainty weighting (Kendall, Gal and Cipolla, 2018, "Multi-Task Learning Using Uncertainty to
  Weigh Losses"): one learnable log-variance ``s_i`` per loss, each loss's term of the paper's objective
  scaled by its configured weight ``w_i`` (``ObjectivesConfig.*_weight``): ``total = sum_i w_i (exp(-s_i) L_i
  + s_i)``. ``s_i`` starts at 0, so training starts from the configured weighted sum; at the optimum of ``s_i``
  the effective weight ``w_i exp(-s_i)`` is ``w_i / L_i``: each loss is normalised by its size and the
  configured ratios stay (without ``w_i`` on the ``+ s_i`` term they would cancel out, and switching the kit on
  would also undo a default's weights). We use the one form for every loss (the paper's classification form;
  the 1/2 factors of its regression form only rescale ``s``).

Both are off by default (``ObjectivesConfig.query_diversity_weight = 0``, ``adaptive_weighting = false``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def query_diversity(query_output: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal cosine similarity of the queries. query_output: [B, Q, H], Q >= 2 -> scalar."""
    if query_output.ndim != 3 or query_output.shape[1] < 2:
        raise ValueError(f"query_output must be [B, Q>=2, H], got {tuple(query_output.shape)}")
    q = F.normalize(query_output.float(), dim=-1)
    sim = q @ q.transpose(1, 2)  # [B, Q, Q]
    n = q.shape[1]
    off_diagonal = sim.square().sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).square().sum(dim=1)
    return (off_diagonal / (n * (n - 1))).mean()


class UncertaintyWeighting(nn.Module):
    """``total = sum_i w_i (exp(-s_i) L_i + s_i)`` over the losses of positive configured weight ``w_i``,
    ``s`` learnable (init 0)."""

    def __init__(self, weights: dict[str, float]):
        super().__init__()
        on = {name: float(w) for name, w in weights.items() if w > 0}
        if not on:
            raise ValueError(f"UncertaintyWeighting needs at least one loss of positive weight, got {weights}")
        self.names = tuple(on)
        self.register_buffer("weights", torch.tensor(list(on.values())), persistent=False)
        self.log_vars = nn.Parameter(torch.zeros(len(self.names)))

    def forward(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """losses: {name: scalar} with exactly ``names`` -> (total, {"weight_<name>": w_i exp(-s_i)} detached)."""
        if set(losses) != set(self.names):
            raise KeyError(f"uncertainty weighting over {list(self.names)} got losses {sorted(losses)}")
        stacked = torch.stack([losses[name] for name in self.names])
        total = (self.weights * (torch.exp(-self.log_vars) * stacked + self.log_vars)).sum()
        effective = self.weights * torch.exp(-self.log_vars.detach())
        return total, {f"weight_{name}": w for name, w in zip(self.names, effective)}
