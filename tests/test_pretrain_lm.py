"""tools/pretrain_lm.py: a few steps on captions from text and JSONL, saved and reloaded as the
frozen LLM of the bridge."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from test_llm_bridge import SENTENCES, train_tiny_tokenizer

from videoqf.llm.bridge import VideoLLMBridge
from videoqf.llm.config import CaptionLMConfig, LLMConfig
from videoqf.llm.pretrain import build_caption_lm, pretrain_caption_lm, read_captions
from videoqf.llm.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    """tools/pretrain_lm.py as a module, so its main() runs in-process (no second torch import)."""
    spec = importlib.util.spec_from_file_location("pretrain_lm_tool", ROOT / "tools" / "pretrain_lm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = ["--n-layer", "2", "--n-embd", "32", "--n-head", "2", "--batch-size", "8", "--warmup-steps", "2"]


def test_read_captions_text_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("one caption\n\n two captions \n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"video": "x.mp4", "caption": "from json"}) + "\n")
    assert read_captions([tmp_path / "a.txt", tmp_path / "b.jsonl"]) == ["one caption", "two captions", "from json"]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"video": "x.mp4"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_captions([tmp_path / "bad.jsonl"])


def test_training_lowers_the_loss(tmp_path):
    tokenizer = load_tokenizer(train_tiny_tokenizer(tmp_path / "tokenizer.json"))
    # 100 steps: with captions at random offsets (the default) the loss falls more slowly than at offset 0
    config = CaptionLMConfig(n_layer=2, n_embd=32, n_head=2, steps=100, batch_size=8, lr=3e-3, warmup_steps=5)
    _, losses = pretrain_caption_lm(SENTENCES, tokenizer, config, progress=False)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


@pytest.mark.parametrize("random_offset", [True, False])
def test_random_offsets_train_the_positions_a_prefix_pushes_captions_to(tmp_path, random_offset):
    """Stage 2 puts the caption after the video tokens: with random offsets the late position embeddings
    train; without, only the first ones do (the others keep their init)."""
    tokenizer = load_tokenizer(train_tiny_tokenizer(tmp_path / "tokenizer.json"))
    config = CaptionLMConfig(n_layer=1, n_embd=32, n_head=2, max_len=64, steps=20, batch_size=8, warmup_steps=2,
                             weight_decay=0.0, random_offset=random_offset,  # no decay: untrained rows stay put
                             prefix_slots=0)
    torch.manual_seed(config.seed)
    init = build_caption_lm(config, tokenizer).transformer.wpe.weight.detach().clone()
    model, _ = pretrain_caption_lm(SENTENCES, tokenizer, config, progress=False)
    longest = max(len(ids) for ids in tokenizer(SENTENCES, add_special_tokens=False)["input_ids"]) + 2
    late = slice(longest, config.max_len)
    moved = (model.transformer.wpe.weight[late] - init[late]).abs().amax(dim=1) > 0
    assert moved.float().mean().item() > 0.9 if random_offset else not moved.any()


def test_the_lm_learns_to_read_the_soft_prefix(tmp_path):
    """With the caption encoder's prefix the LM predicts the caption far better than from nothing: it reads
    the soft vectors (a caption-only LM ignores them). Same steps and seed; the prefix is on for every
    example (plain_fraction=0) or for none (1)."""
    tokenizer = load_tokenizer(train_tiny_tokenizer(tmp_path / "tokenizer.json"))
    final = {}
    for plain in (0.0, 1.0):
        config = CaptionLMConfig(n_layer=2, n_embd=32, n_head=2, max_len=48, steps=150, batch_size=8,
                                 warmup_steps=5, prefix_slots=4, plain_fraction=plain)
        _, losses = pretrain_caption_lm(SENTENCES, tokenizer, config, progress=False)
        final[plain] = sum(losses[-10:]) / 10
    assert final[0.0] < 0.5 * final[1.0], final


def test_cli_trains_saves_and_loads_as_frozen_llm(tmp_path, capsys):
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    train_tiny_tokenizer(tok_dir / "tokenizer.json")
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps({"caption": s}) + "\n" for s in SENTENCES))
    out = tmp_path / "lm"
    load_tool().main(["--captions", str(captions), "--tokenizer", str(tok_dir), "--out", str(out),
                      "--steps", "5", "--quiet", *TINY])
    assert "saved to" in capsys.readouterr().out
    assert (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file()

    bridge = VideoLLMBridge.from_config(LLMConfig(arch="causal", path=str(out)), video_dim=6)
    assert bridge.tokenizer.eos_token == "[SEP]" and bridge.tokenizer.bos_token == "[BOS]"
    assert not any(p.requires_grad for p in bridge.llm.parameters())
    loss = bridge(torch.randn(2, 3, 6), None, ["a red ball", "a blue square"]).loss
    assert torch.isfinite(loss)


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_tool().main(["--help"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--captions" in text and "--steps" in text
