"""The Q-Former's text side: BERT word + absolute position embeddings, and BERT's LM prediction head.

As in BLIP-2 / LAVIS, the embedding LayerNorm is shared with the learned queries (it normalises the
concatenation ``[queries; text]``), so it lives in ``QFormer`` rather than here. Text positions count
from 0 whether or not queries precede them.
"""
from __future__ import annotations

import torch
from torch import nn


class TextEmbeddings(nn.Module):
    """token ids [B, L] (+ offset of earlier text) -> embeddings [B, L, H] before the shared LayerNorm."""

    def __init__(self, *, vocab_size: int, max_len: int, hidden_size: int):
        super().__init__()
        self.word = nn.Embedding(vocab_size, hidden_size)
        self.position = nn.Embedding(max_len, hidden_size)

    def forward(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        length = ids.shape[1]
        if offset + length > self.position.num_embeddings:
            raise ValueError(f"text of length {offset + length} exceeds max_text_len={self.position.num_embeddings}")
        positions = torch.arange(offset, offset + length, device=ids.device)
        return self.word(ids) + self.position(positions)[None]


class LMHead(nn.Module):
    """BERT's prediction head: dense -> GELU -> LayerNorm -> decoder (tied to the word embeddings)."""

    def __init__(self, *, hidden_size: int, vocab_size: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(hidden_size, eps=eps)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden))))
