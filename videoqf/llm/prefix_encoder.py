"""The caption encoder of the caption LM's soft-prompt pre-training (``videoqf.llm.pretrain``).

A pre-trained LLM reads soft prompts: BLIP-2's projected queries steer OPT / Flan-T5 because their
layers process whatever vectors precede the text. A tiny LM trained on captions alone does not: it
ignores any prefix (stage 2 through it captioned every held-out clip the same way). So the stand-in LM is
pre-trained to decode each caption from a few vectors that this encoder makes from the same caption
(an autoencoder over text); the encoder is then thrown away, and stage 2 must produce such vectors from
the video. Notation: B batch, L caption length, K slots, E the LM's embedding width.
"""
from __future__ import annotations

import torch
from torch import nn


class CaptionPrefixEncoder(nn.Module):
    """ids [B, L], mask [B, L] bool -> [B, K, E] layer-normed slot vectors (attention pooling of a small
    bidirectional transformer over the caption)."""

    def __init__(self, *, vocab_size: int, max_len: int, width: int, heads: int, slots: int, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Embedding(max_len, width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        # N(0, 1) slot queries, each its own: at 0.02 every slot attends alike (uniformly) at the start and
        # pools the caption into a bag of words, losing which colour goes with which shape and in what order
        self.slots = nn.Parameter(torch.randn(1, slots, width))
        self.pool = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        tokens = self.encoder(self.embed(ids) + self.position(positions), src_key_padding_mask=~mask)
        slots, _ = self.pool(self.slots.expand(ids.shape[0], -1, -1), tokens, tokens, key_padding_mask=~mask)
        return self.norm(slots)
