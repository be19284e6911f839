"""Instruction tasks on the synthetic world (videoqf/data/synthetic/instructions.py): the answers read off a
caption, the batches of an instruction stage, and the accuracy evaluation (videoqf/eval/instructions.py)."""
import pytest
import torch

from videoqf.data.synthetic import caption, load_tokenizer
from videoqf.data.synthetic.instructions import TASKS, answer, check_tasks, instruct
from videoqf.eval.instructions import instruction_accuracy
from videoqf.experiment import StageConfig
from videoqf.models.collate import CaptionCollate

SPEC = {"events": [{"action": "moves", "shape": "square", "colour": "red", "direction": "left"},
                   {"action": "turns", "shape": "circle", "colour": "blue", "new_colour": "green"}],
        "sound": "low hum"}


def test_answers_are_read_off_the_worlds_caption():
    text = caption(SPEC)
    assert answer("caption", text) == text
    assert answer("order", text) == "a red square moves left"
    assert answer("sound", text) == "a low hum"
    assert answer("colour", text) == "green"
    silent = caption({**SPEC, "events": SPEC["events"][:1], "sound": None})
    assert answer("sound", silent) == "in silence" and answer("colour", silent) is None


def test_an_item_gets_a_task_that_applies_to_it_seeded_by_its_index():
    silent = caption({**SPEC, "events": SPEC["events"][:1], "sound": None})
    asked = {instruct(silent, i, ["colour", "sound"])[0] for i in range(20)}
    assert asked == {TASKS["sound"][0]}  # no object turns: never the colour question
    assert instruct(caption(SPEC), 3, list(TASKS), seed=1) == instruct(caption(SPEC), 3, list(TASKS), seed=1)
    assert len({instruct(caption(SPEC), i, list(TASKS))[0] for i in range(40)}) == len(TASKS)


def test_tasks_are_checked_and_only_for_caption_stages():
    with pytest.raises(ValueError, match="unknown instruction tasks"):
        check_tasks(["order", "weather"])
    with pytest.raises(ValueError, match="caption stage"):
        StageConfig(objective="stage1", train=["backend"], tasks=["order"])


def test_an_instruction_batch_asks_the_question_and_targets_the_answer(synthetic_dir):
    collate = CaptionCollate(load_tokenizer(synthetic_dir), 40, base=lambda items: {
        "caption": [i["caption"] for i in items], "index": torch.tensor([i["index"] for i in items])}, tasks=["order"])
    batch = collate([{"caption": caption(SPEC), "index": 0}])
    assert batch["prompt"] == [TASKS["order"][0]] and batch["caption"] == ["a red square moves left"]


class Answers:
    """A stand-in model that answers every question with ``reply(question)``."""

    def __init__(self, reply):
        self.reply = reply

    def eval(self):
        return self

    def caption(self, batch, prompts, **kwargs):
        return [self.reply(q, c) for q, c in zip(prompts, batch["caption"])]


def test_accuracy_counts_exact_answers_on_the_clips_a_task_applies_to():
    clips = [{"caption": caption(SPEC)}, {"caption": caption({**SPEC, "events": SPEC["events"][:1], "sound": None})}]
    collate = lambda items: {"caption": [i["caption"] for i in items]}  # noqa: E731
    right = instruction_accuracy(Answers(lambda q, c: next(answer(t, c) for t in TASKS if TASKS[t][0] == q) or ""),
                                 clips, collate, ["order", "colour"])
    assert right["order"] == {"accuracy": 1.0, "chance": (1 / 2 + 1) / 2, "clips": 2}
    assert right["colour"]["clips"] == 1 and right["colour"]["accuracy"] == 1.0
    wrong = instruction_accuracy(Answers(lambda q, c: "Green "), clips, collate, ["colour"])
    assert wrong["colour"]["accuracy"] == 1.0  # case and spacing do not count
    assert instruction_accuracy(Answers(lambda q, c: "red"), clips, collate, ["colour"])["colour"]["accuracy"] == 0.0
