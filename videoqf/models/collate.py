"""Batches for the model: the clip collate plus the captions tokenized for the Q-Former's text branch.

Captions are padded to ``max_len`` on every rank, so VTM can gather them across ranks with one shape.
"""
from __future__ import annotations

import torch

from videoqf.data.collate import collate_clips


class CaptionCollate:
    """Collate clips (``videoqf.data.collate.collate_clips``) and add ``text_ids`` / ``text_mask`` [B, L]."""

    def __init__(self, tokenizer, max_len: int, base=collate_clips):
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.base = base

    def __call__(self, items: list[dict]) -> dict:
        batch = self.base(items)
        batch["text_ids"], batch["text_mask"] = tokenize(self.tokenizer, batch["caption"], self.max_len)
        return batch


def tokenize(tokenizer, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> ids [N, L], mask [N, L] (the same layout as the training batches)."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"].bool()
