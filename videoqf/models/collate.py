"""Batches for the model: the clip collate plus the captions tokenized for the Q-Former's text branch.

Captions are truncated to ``max_len`` tokens and padded to the batch's longest: the synthetic captions
are at most 27 tokens against the default 40, and the head's text passes cost in proportion (VTM's alone
are about a third of a stage-1 step). The ranks' lengths may then differ; VTM pads them to one before
gathering (``objectives.distributed.gather_texts``).

Instruction templates (InstructBLIP; ``data.instructions``): when given, every item gets one template as
its ``prompt`` (batch["prompt"]: list[str]), drawn by ``(seed, item index)`` so an item keeps its
template in any worker, epoch or resumed run. The stage-2 LLM reads it as its prompt and, when the model
is instruction-aware, the head's text branch reads it too (``VideoLanguageModel.encode_for_llm``).
Without templates there is no ``prompt`` and the LLM's default prompt (``model.llm.prompt``) is used.
Instruction tasks (``tasks``, a stage's ``StageConfig.tasks``) go further: each item's prompt is a question and its
caption is replaced by the answer (``videoqf.data.synthetic.instructions.instruct``).
"""
from __future__ import annotations

import random

import torch

from videoqf.data.collate import collate_clips
from videoqf.data.synthetic.instructions import instruct
from videoqf.llm.text_ids import TextIds


class CaptionCollate:
    """Collate clips (``videoqf.data.collate.collate_clips``) and add ``text_ids`` / ``text_mask`` [B, L]
    (and ``prompt``, one of ``instructions`` per item, when there are any)."""

    def __init__(self, tokenizer, max_len: int, base=collate_clips, *, instructions: list[str] = (), seed: int = 0,
                 tasks: list[str] = ()):
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.text_ids = TextIds(tokenizer, max_len)
        self.base = base
        self.instructions = list(instructions)
        self.seed = seed
        self.tasks = list(tasks)

    def __call__(self, items: list[dict]) -> dict:
        batch = self.base(items)
        if self.tasks:
            pairs = [instruct(c, int(i), self.tasks, self.seed) for c, i in zip(batch["caption"], batch["index"])]
            batch["prompt"], batch["caption"] = [q for q, _ in pairs], [a for _, a in pairs]
        batch["text_ids"], batch["text_mask"] = self.text_ids.pad_ids(batch["caption"])
        if self.instructions and not self.tasks:
            batch["prompt"] = [self.instruction(int(i)) for i in batch["index"]]
        return batch

    def instruction(self, index: int) -> str:
        """The template of item ``index``: a uniform draw seeded by (seed, index)."""
        return random.Random(f"{self.seed}:{index}").choice(self.instructions)


def tokenize(tokenizer, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts -> ids [N, L], mask [N, L], L the longest text's length in tokens, at most ``max_len``."""
    enc = tokenizer(texts, padding="longest", truncation=True, max_length=max_len, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"].bool()
