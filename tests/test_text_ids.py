"""TextIds: each distinct text tokenized once, batches padded as the tokenizer pads them."""
import json
from pathlib import Path

import pytest
import torch

from videoqf.llm.text_ids import TextIds
from videoqf.llm.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def captions(synthetic_dir):
    return [json.loads(line)["caption"] for line in (Path(synthetic_dir) / "train.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batches_equal_the_tokenizers_own(synthetic_dir, captions, side):
    tok = load_tokenizer(synthetic_dir)
    tok.padding_side = side
    text_ids = TextIds(tok, 12)  # shorter than some captions: truncation included
    batches = [captions[:8], captions[4:12] + captions[:3], ["a", captions[0], "a"]]  # repeats, seen and unseen texts
    for texts in batches:
        want = tok(texts, padding="longest", truncation=True, max_length=12, return_tensors="pt")
        ids, mask = text_ids.pad_ids(texts)
        assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"].bool())
    assert any(m.sum() == 12 for m in text_ids.pad_ids(captions[:40])[1])  # some were cut at max_len


def test_remembers_up_to_its_limit_and_calls_the_tokenizer_once_a_text(synthetic_dir, captions):
    tok = load_tokenizer(synthetic_dir)
    calls = []

    def counting(texts, **kwargs):
        calls.append(list(texts))
        return tok(texts, **kwargs)

    counting.pad_token_id, counting.padding_side = tok.pad_token_id, tok.padding_side
    texts = list(dict.fromkeys(captions))[:5]
    text_ids = TextIds(counting, 40, add_special_tokens=False, limit=3)
    first = text_ids(texts)
    assert first == tok(texts, add_special_tokens=False)["input_ids"]
    assert text_ids(texts[:3]) == first[:3] and len(calls) == 1  # the first three were kept
    assert text_ids(texts[3:]) == first[3:] and calls[-1] == texts[3:]  # past the limit: tokenized again
