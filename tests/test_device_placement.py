"""Every tensor a model path makes is made where the model is: a GPU run meets no CPU tensor.

The meta device stands for the GPU. A model moved there computes shapes only, so a tensor made on the CPU in the
middle of a pass (a mask, a flag, an empty result) fails the pass as it would fail on a GPU. Reading a value back
(``item``, ``tolist``, ``bool``, ``.cpu()``) has no data on meta: within these tests it gives a placeholder, which
the checks and decoding loops take as they come. (Meta lets some dtype mismatches pass, a Linear's among them:
tests/test_precision.py runs the precisions on the CPU.)
"""
from dataclasses import replace

import pytest
import torch
import torch.fx.experimental._config as fx_config

from _tiny import EXPERIMENTS, stage_losses, tiny_config, tiny_experiment
from videoqf.llm.tokenizer import load_tokenizer
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.recipes.run import datasets, evaluation, make_collate
from videoqf.train.loop import to_device

META = torch.device("meta")


@pytest.fixture
def values_read_on_meta(monkeypatch):
    """Placeholders for the values a pass reads back (what a GPU would hand over after a sync)."""
    def on_meta(original, placeholder):
        return lambda self, *a, **k: placeholder(self) if self.is_meta else original(self, *a, **k)

    Tensor = torch.Tensor
    monkeypatch.setattr(Tensor, "item", on_meta(Tensor.item, lambda t: 1.0 if t.is_floating_point() else 1))
    monkeypatch.setattr(Tensor, "__bool__", on_meta(Tensor.__bool__, lambda t: True))
    monkeypatch.setattr(Tensor, "__int__", on_meta(Tensor.__int__, lambda t: 0))
    zeros = lambda t: torch.zeros(t.shape, dtype=t.dtype).tolist()  # noqa: E731
    monkeypatch.setattr(Tensor, "tolist", on_meta(Tensor.tolist, zeros))
    monkeypatch.setattr(Tensor, "cpu", on_meta(Tensor.cpu, lambda t: torch.rand(t.shape).to(t.dtype)))
    equal = torch.equal
    monkeypatch.setattr(torch, "equal", lambda a, b: True if a.is_meta or b.is_meta else equal(a, b))
    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):  # boolean indexing: every row kept
        yield


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_stage_trains_on_the_models_device(synthetic_dir, name, values_read_on_meta):
    # every variant and recipe, the recipes' own stages too (instruction tuning with its tasks), from decoded clips
    cfg = tiny_experiment(name, synthetic_dir)
    model = VideoLanguageModel(cfg.model, load_tokenizer(cfg.model.tokenizer))
    train, _ = datasets(cfg, model)
    model.to(META)
    for stage, loss in stage_losses(cfg, model, train, META, None):
        assert loss.device == META, stage
        loss.backward()
        assert all(p.grad.device == META for p in model.parameters() if p.grad is not None), stage


@pytest.mark.parametrize("variant", ["cascaded", "spatiotemporal"])
def test_evaluation_runs_on_the_models_device(synthetic_dir, variant, values_read_on_meta):
    # retrieval with its rerank and the head's and the LLM's captions; then the LLM's likelihood of a caption, which
    # scores the order and sound pairs (the placeholders read every clip's index as 0, so no pair is found here)
    cfg = tiny_config(synthetic_dir, variant=variant)
    cfg = replace(cfg, eval=replace(cfg.eval, max_clips=6, batch_size=4))
    model = VideoLanguageModel(cfg.model, load_tokenizer(cfg.model.tokenizer)).eval()
    _, held_out = datasets(cfg, model)
    collate = make_collate(cfg, model.tokenizer)
    model.to(META)
    metrics, samples = evaluation(cfg, held_out, collate, captions=True)(model)
    assert metrics["clips"] == len(samples) > 0 and {"t2v_r1", "v2t_r1", "cider", "head_cider"} <= set(metrics)
    assert all("generated" in s for s in samples)
    batch = to_device(collate([held_out[i] for i in range(2)]), META, None)
    with torch.no_grad():
        read = model.encode_for_llm(batch, None)
        scores = model.bridge.caption_log_likelihood(read.tokens, read.mask, ["a red square appears"] * 2)
    assert scores.shape == (2,) and scores.device == META
