"""Every model path in the precisions a GPU run uses, computed on the CPU (which checks every dtype a GPU checks):
the whole model and its batches in bf16, as a bf16 engine casts them; and the frozen encoders in bf16 under a
float32 model, as their "auto" dtype gives them on a GPU in an fp32 run and in the inference tools."""
from dataclasses import replace

import pytest
import torch

from _tiny import EXPERIMENTS, stage_losses, tiny_config, tiny_experiment
from videoqf.llm.tokenizer import load_tokenizer
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.recipes.run import datasets, evaluation, make_collate

PRECISIONS = {"bf16": (torch.bfloat16, None), "bf16-encoders": (torch.float32, torch.bfloat16)}


def built(cfg, precision: str):
    """(the model of ``cfg`` in ``precision``, the batches' dtype)."""
    torch.manual_seed(0)
    model = VideoLanguageModel(cfg.model, load_tokenizer(cfg.model.tokenizer))
    dtype, encoders = PRECISIONS[precision]
    model.to(dtype)
    for encoder in (model.vision, model.audio):
        if encoder is not None and encoders is not None:
            encoder.to(encoders)
    return model, dtype


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_stage_trains_in_the_precision(synthetic_dir, name, precision):
    cfg = tiny_experiment(name, synthetic_dir)
    model, dtype = built(cfg, precision)
    train, _ = datasets(cfg, model)
    for stage, loss in stage_losses(cfg, model, train, torch.device("cpu"), dtype):
        assert torch.isfinite(loss), stage
        model.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), stage


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("variant", ["cascaded", "spatiotemporal"])
def test_evaluation_runs_in_the_precision(synthetic_dir, variant, precision):
    cfg = tiny_config(synthetic_dir, variant=variant)
    model, _ = built(cfg, precision)
    cfg = replace(cfg, eval=replace(cfg.eval, max_clips=6, batch_size=4))
    _, held_out = datasets(cfg, model)
    metrics, samples = evaluation(cfg, held_out, make_collate(cfg, model.tokenizer), captions=True)(model.eval())
    assert metrics["clips"] == len(samples) == len(held_out)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("t2v_r1", "v2t_r1"))
    assert "lm_order_pair_acc" in metrics and all("generated" in s for s in samples)
