"""Every model path in the precisions a GPU run uses, computed on the CPU (which checks every dtype a GPU checks):
the whole model and its batches in bf16, as a bf16 engine casts them; and the frozen encoders in bf16 under a
float32 model, as their "auto" dtype gives them on a GPU in an fp32 run and in the inference tools."""
from dataclasses import replace

import pytest
import torch

from _tiny import RECIPES, VARIANTS, recipe_overrides, recipe_stage_losses, tiny_config
from videoqf.experiment import load_experiment
from videoqf.llm.tokenizer import load_tokenizer
from videoqf.models.groups import lock
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.objectives import build_objective
from videoqf.recipes.run import datasets, evaluation, make_collate
from videoqf.train.loop import to_device

PRECISIONS = {"bf16": (torch.bfloat16, None), "bf16-encoders": (torch.float32, torch.bfloat16)}


def built(synthetic_dir, variant: str, precision: str, cfg=None):
    """(config, model in ``precision``, the batches' dtype); no feature cache, so the frozen encoders run."""
    cfg = cfg or tiny_config(synthetic_dir, variant=variant)
    torch.manual_seed(0)
    model = VideoLanguageModel(cfg.model, load_tokenizer(cfg.model.tokenizer))
    dtype, encoders = PRECISIONS[precision]
    model.to(dtype)
    for encoder in (model.vision, model.audio):
        if encoder is not None and encoders is not None:
            encoder.to(encoders)
    return cfg, model, dtype


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_both_stages_train_in_the_precision(synthetic_dir, variant, precision):
    cfg, model, dtype = built(synthetic_dir, variant, precision)
    train, _ = datasets(cfg, model)
    batch = to_device(make_collate(cfg, model.tokenizer)([train[i] for i in range(4)]), torch.device("cpu"), dtype)
    for stage in ("stage1", "stage2"):
        lock(model, cfg.stages[stage].train, cfg.stages[stage].freeze)
        model.zero_grad(set_to_none=True)
        loss = build_objective(cfg.stages[stage].objective, model)(model, batch)["loss"]
        assert torch.isfinite(loss), stage
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), stage


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_stage_of_a_recipe_trains_in_the_precision(synthetic_dir, recipe, precision):
    cfg = load_experiment(["configs/synthetic.yaml", recipe], recipe_overrides(recipe, synthetic_dir))
    cfg, model, dtype = built(synthetic_dir, None, precision, cfg)
    train, _ = datasets(cfg, model)
    for name, loss in recipe_stage_losses(cfg, model, train, torch.device("cpu"), dtype):
        assert torch.isfinite(loss), name
        loss.backward()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("variant", ["cascaded", "spatiotemporal"])
def test_evaluation_runs_in_the_precision(synthetic_dir, variant, precision):
    cfg, model, _ = built(synthetic_dir, variant, precision)
    cfg = replace(cfg, eval=replace(cfg.eval, max_clips=6, batch_size=4))
    _, held_out = datasets(cfg, model)
    metrics, samples = evaluation(cfg, held_out, make_collate(cfg, model.tokenizer), captions=True)(model.eval())
    assert metrics["clips"] == len(samples) == len(held_out)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("t2v_r1", "v2t_r1"))
    assert "lm_order_pair_acc" in metrics and all("generated" in s for s in samples)
