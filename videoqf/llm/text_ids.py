"""Token ids of texts, each distinct text tokenized once.

Training sees the same captions and prompts every epoch, and a batch call of transformers' fast tokenizer
costs about 0.1 ms a text on the CPU; a dictionary lookup costs next to nothing. The ids are those of
``tokenizer(text, truncation=True, max_length=max_len)`` alone, so padding them to a batch's longest gives what
``padding="longest"`` gives (``pad_ids``).
"""
from __future__ import annotations

from itertools import islice

import torch


class TextIds:
    """``texts -> [ids of each]`` through ``tokenizer`` (truncated to ``max_len``, no padding), remembering up to
    ``limit`` distinct texts (a large corpus seen once an epoch does not grow it without bound). The lists returned
    are the remembered ones: build new lists from them, never change them in place."""

    def __init__(self, tokenizer, max_len: int, *, add_special_tokens: bool = True, limit: int = 200_000):
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.add_special_tokens = add_special_tokens
        self.limit = limit
        self._ids: dict[str, list[int]] = {}

    def __call__(self, texts: list[str]) -> list[list[int]]:
        encoded: dict[str, list[int]] = {}
        new = [t for t in dict.fromkeys(texts) if t not in self._ids]
        if new:
            encoded = dict(zip(new, self.tokenizer(new, add_special_tokens=self.add_special_tokens, truncation=True,
                                                   max_length=self.max_len)["input_ids"]))
            self._ids.update(islice(encoded.items(), max(self.limit - len(self._ids), 0)))
        return [self._ids[t] if t in self._ids else encoded[t] for t in texts]

    def pad_ids(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [N, L] and mask [N, L], L the longest text's length, padded on the tokenizer's padding side."""
        seqs = self(texts)
        lengths = torch.tensor([len(s) for s in seqs])
        length = int(lengths.max())
        pad, left = self.tokenizer.pad_token_id, self.tokenizer.padding_side == "left"
        ids = torch.tensor([[pad] * (length - len(s)) + s if left else s + [pad] * (length - len(s)) for s in seqs])
        place = torch.arange(length)
        mask = place >= (length - lengths)[:, None] if left else place < lengths[:, None]
        return ids, mask
