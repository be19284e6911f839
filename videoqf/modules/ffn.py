"""Feed-forward blocks and the routed feed-forward experts of the Q-Former.

BLIP-2's Q-Former already routes by position: query positions go through one FFN, text positions
through another. ``RoutedFFN`` generalises that: the queries are split into named groups, each group
goes through its own expert, and the text goes through a named expert too. BLIP-2 is the routing
``{queries -> "query", text -> "text"}``; the spatio-temporal Video Q-Former uses
``{spatial queries -> "spatial", temporal queries -> "temporal", semantic queries and text -> "semantic"}``
(SP-FFN / T-FFN / SM-FFN).
"""
from __future__ import annotations

import torch
from torch import nn

from videoqf.modules.attention import ResidualNorm


class FeedForward(nn.Module):
    """BERT FFN: Linear -> GELU -> Linear -> dropout -> LayerNorm(residual)."""

    def __init__(self, *, hidden_size: int, intermediate_size: int, dropout: float, eps: float):
        super().__init__()
        self.up = nn.Linear(hidden_size, intermediate_size)
        self.act = nn.GELU()
        self.down = ResidualNorm(in_features=intermediate_size, hidden_size=hidden_size, dropout=dropout, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)), x)


class RoutedFFN(nn.Module):
    """Named FFN experts with a fixed routing of query groups and text.

    Args:
        query_routes: ``[(expert_name, group_size), ...]`` covering all queries in order.
        text_expert: expert used by text positions (may be one of the query experts, to share it).
        make_expert: builds one expert.

    forward(x [B, Q + L, H], num_queries) -> [B, Q + L, H]; ``num_queries`` is 0 for text-only input.
    """

    def __init__(self, *, query_routes: list[tuple[str, int]], text_expert: str | None, make_expert):
        super().__init__()
        names = [name for name, _ in query_routes] + ([text_expert] if text_expert else [])
        self.experts = nn.ModuleDict({name: make_expert() for name in dict.fromkeys(names)})
        self.query_routes = list(query_routes)
        self.text_expert = text_expert

    def forward(self, x: torch.Tensor, num_queries: int) -> torch.Tensor:
        parts = []
        if num_queries:
            start = 0
            for name, size in self.query_routes:
                parts.append(self.experts[name](x[:, start : start + size]))
                start += size
        if x.shape[1] > num_queries:
            if self.text_expert is None:
                raise ValueError("this Q-Former was built without a text branch but was given text")
            parts.append(self.experts[self.text_expert](x[:, num_queries:]))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
