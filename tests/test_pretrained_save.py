"""model.save_pretrained(DIR) (safetensors + YAML) and load_pretrained(DIR): the same model comes back, tensors
equal, ties kept, captions equal; for a released checkpoint's model and for a synthetic-world one."""
from dataclasses import replace

import pytest
import torch

import _hf_tiny as H
from test_video_lm import model_config
from videoqf.data.synthetic import load_tokenizer
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.pretrained import load_pretrained
from videoqf.pretrained.save import _tensors

PROMPTS = ["what is in this picture ?", "describe the video in a short caption ."]


def assert_same(a, b):
    ta, tied_a = _tensors(a)
    tb, tied_b = _tensors(b)
    assert ta.keys() == tb.keys() and tied_a == tied_b
    assert all(torch.equal(ta[k], tb[k]) and ta[k].dtype == tb[k].dtype for k in ta)
    assert all(p.requires_grad == q.requires_grad for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("name", ["blip2-opt", "instructblip-llama"])
def test_released_model_round_trip(name, tmp_path):
    H.build(name, tmp_path / "released")
    ours = load_pretrained(tmp_path / "released")
    torch.manual_seed(1)
    with torch.no_grad():
        for p in ours.backend.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours.save_pretrained(tmp_path / "saved")
    assert not list((tmp_path / "saved").glob("*.json"))  # safetensors and YAML (tokenizer folders aside)
    again = load_pretrained(tmp_path / "saved")
    assert_same(ours, again)
    head = again.backend.head
    if name.startswith("instructblip"):  # BLIP-2's folders bring no Q-Former text side
        assert head.lm_head.decoder.weight is head.text_embeddings.word.weight
    frames = torch.randn(2, 1, 3, H.IMAGE_SIZE, H.IMAGE_SIZE)
    batch = {"frames": frames, "frame_mask": torch.ones(2, 1, dtype=torch.bool)}
    assert again.caption(batch, PROMPTS, max_new_tokens=5) == ours.caption(batch, PROMPTS, max_new_tokens=5)


def test_synthetic_model_round_trip(synthetic_dir, tmp_path):
    torch.manual_seed(0)
    cfg = replace(model_config("framewise", tmp_path), tokenizer=synthetic_dir)
    model = VideoLanguageModel(cfg, load_tokenizer(synthetic_dir)).eval()
    with torch.no_grad():
        for p in model.backend.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(tmp_path / "saved")
    again = load_pretrained(tmp_path / "saved")
    assert_same(model, again)
