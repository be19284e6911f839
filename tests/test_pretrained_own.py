"""This project's side of load_pretrained and of the two tokenizers: a run's checkpoint folder loads as the
model that wrote it; the LLM reads its own tokenizer when the config names one (the synthetic default shares)."""
from dataclasses import replace

import torch

import _hf_tiny as H
from test_video_lm import model_config
from videoqf.data.synthetic import load_tokenizer
from videoqf.experiment import ExperimentConfig
from videoqf.models.io import learned_state_dict
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.pretrained import load_pretrained
from videoqf.recipes.run import checkpoint_files


def test_a_run_checkpoint_loads_as_the_model_that_wrote_it(synthetic_dir, tmp_path):
    cfg = ExperimentConfig(model=replace(model_config("framewise", tmp_path), tokenizer=synthetic_dir))
    torch.manual_seed(3)
    model = VideoLanguageModel(cfg.model, load_tokenizer(synthetic_dir))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for name, write in checkpoint_files(cfg, model).items():
        write(ckpt / name)
    loaded = load_pretrained(ckpt)
    saved, again = learned_state_dict(model), learned_state_dict(loaded)
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)


def test_the_llm_reads_its_own_tokenizer_when_configured(synthetic_dir, tmp_path):
    qformer_tok = load_tokenizer(synthetic_dir)
    shared_cfg = model_config("framewise", tmp_path)
    assert VideoLanguageModel(shared_cfg, qformer_tok).bridge.tokenizer is qformer_tok  # the synthetic default

    llm_dir = tmp_path / "opt-tokenizer"
    H.llm_tokenizer("opt").save_pretrained(llm_dir)  # OPT-shaped: `</s>` is its BOS
    cfg = replace(shared_cfg, llm=replace(shared_cfg.llm, tokenizer_path=str(llm_dir)))
    model = VideoLanguageModel(cfg, qformer_tok)
    assert model.tokenizer is qformer_tok and model.bridge.tokenizer is not qformer_tok
    assert model.bridge.special.bos == model.bridge.special.eos == model.bridge.tokenizer.convert_tokens_to_ids("</s>")
    tokens = torch.randn(2, 8, model.backend.hidden_size)
    out = model.bridge(tokens, None, ["a dog runs", "the red car is big"], ["what is this ?"] * 2)
    assert torch.isfinite(out.loss)
    ids = model.bridge.tokenizer("a dog runs", add_special_tokens=False)["input_ids"]
    first = (out.labels[0] != -100).nonzero()[0, 0]
    assert out.labels[0, first:first + len(ids) + 1].tolist() == ids + [model.bridge.special.eos]
