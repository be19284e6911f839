"""Instruction tasks on the synthetic world: a question about a clip and its answer, read off the clip's caption.

InstructBLIP (Dai et al., 2023) tunes on many tasks, each a set of templated instructions with its own answer.
Here (``StageConfig.tasks``):

    caption  "describe the video"          -> the whole caption
    order    "what happens first?"         -> the first event, "a red square moves left"
    sound    "what sound plays?"           -> "a low hum", ..., or "in silence"
    colour   "what colour does it turn?"   -> the new colour of the first event that turns (clips with one only)

The caption grammar is ``videoqf.data.synthetic.scenes.caption``: events joined by ", then ", then ", " and the
sound clause. An item gets one task that applies to it, drawn by ``(seed, item index)`` as the instruction
templates are (``videoqf.models.collate``). The tokenizer spells the question's unseen words letter by letter.
"""
from __future__ import annotations

import random

from videoqf.data.synthetic.vocab import SILENCE_PHRASE

EVENT_SEPARATOR, SOUND_SEPARATOR = ", then ", ", "


def _events(caption: str) -> tuple[list[str], str]:
    body, sound = caption.rsplit(SOUND_SEPARATOR, 1)
    return body.split(EVENT_SEPARATOR), sound


def _sound(caption: str) -> str:
    sound = _events(caption)[1]
    return sound if sound == SILENCE_PHRASE else sound.removeprefix("while ").removesuffix(" plays")


def _colour(caption: str) -> str | None:
    turned = [e.split(" turns ")[1] for e in _events(caption)[0] if " turns " in e]
    return turned[0] if turned else None


# name -> (instruction, answer of a caption or None where the task does not apply)
TASKS = {
    "caption": ("describe the video", lambda caption: caption),
    "order": ("what happens first?", lambda caption: _events(caption)[0][0]),
    "sound": ("what sound plays?", _sound),
    "colour": ("what colour does it turn?", _colour),
}


def check_tasks(names: list[str]) -> None:
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown instruction tasks {unknown}; known: {sorted(TASKS)}")


def answer(task: str, caption: str) -> str | None:
    return TASKS[task][1](caption)


def instruct(caption: str, index: int, tasks: list[str], seed: int = 0) -> tuple[str, str]:
    """(instruction, answer) of item ``index``: one of ``tasks`` that applies to its caption."""
    fits = [t for t in tasks if answer(t, caption) is not None]
    task = random.Random(f"{seed}:{index}").choice(fits or ["caption"])
    return TASKS[task][0], answer(task, caption)
