"""Instruction following on held-out clips: each task's question asked of every clip it applies to, the LLM's
answer against the one read off the clip's caption (``videoqf.data.synthetic.instructions``), exact match.

Chance, per task, is what a model that never looks at the clip gets: the share of the most common answer
(sound, colour); for ``order``, one of the clip's own events picked at random (1 / its number of events,
averaged), which is what a model that sees the events but not their order gets.
"""
from __future__ import annotations

from collections import Counter

import torch

from videoqf.data.synthetic.instructions import EVENT_SEPARATOR, TASKS, answer


def _same(generated: str, expected: str) -> bool:
    return " ".join(generated.lower().split()) == " ".join(expected.lower().split())


@torch.no_grad()
def instruction_accuracy(model, dataset, collate, tasks: list[str], *, batch_size: int = 32,
                         max_new_tokens: int = 32) -> dict[str, dict[str, float]]:
    """task -> {"accuracy", "chance", "clips"} over ``dataset`` (``collate`` gives the reference ``caption``)."""
    model.eval()
    right, expected = Counter(), {t: [] for t in tasks}
    events = []
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        captions = batch["caption"]
        events += [len(c.rsplit(", ", 1)[0].split(EVENT_SEPARATOR)) for c in captions]
        for task in tasks:
            answers = [answer(task, c) for c in captions]
            generated = model.caption(batch, [TASKS[task][0]] * len(captions), max_new_tokens=max_new_tokens,
                                      num_beams=1, do_sample=False)
            for gen, ans in zip(generated, answers):
                if ans is not None:
                    expected[task].append(ans)
                    right[task] += _same(gen, ans)
    out = {}
    for task in tasks:
        clips = len(expected[task])
        if task == "order":
            chance = sum(1 / n for n in events) / len(events)
        else:
            chance = Counter(expected[task]).most_common(1)[0][1] / clips if clips else 0.0
        out[task] = {"accuracy": right[task] / clips if clips else 0.0, "chance": chance, "clips": clips}
    return out
