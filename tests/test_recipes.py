"""Every recipe of configs/recipes/ trains a few steps of both stages on the tiny synthetic set."""
import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from videoqf.experiment import load_experiment
from videoqf.recipes.run import run_experiment

RECIPES = sorted(Path("configs/recipes").glob("*.yaml"))
LLM_WIDTH = 32


def tiny_overrides(recipe: Path, synthetic_dir: str) -> list[str]:
    """The synthetic set's paths, a random 1-layer GPT-2, 2 steps per stage, small frames; no evaluation."""
    own = OmegaConf.load(recipe)
    patch14 = "patch14" in OmegaConf.select(own, "model.vision.model_name", default="")
    frames = [] if OmegaConf.select(own, "data.num_frames") is not None else ["data.num_frames=3"]
    return [
        f"data.annotations={synthetic_dir}/train.jsonl", f"model.tokenizer={synthetic_dir}",
        f"model.vision.image_size={56 if patch14 else 64}", *frames,
        "train.micro_batch_size=3", "train.progress_bar=false", "train.log_every=1",
        "stages.stage1.steps=2", "stages.stage2.steps=2", "model.llm.arch=causal",
        f"model.llm.model_config={{model_type: gpt2, n_layer: 1, n_embd: {LLM_WIDTH}, n_head: 2, vocab_size: 96, "
        "n_positions: 256, bos_token_id: 5, eos_token_id: 3, pad_token_id: 0}",
    ]


def metrics(stage_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_trains_both_stages(recipe, synthetic_dir, tmp_path):
    cfg = load_experiment(["configs/synthetic.yaml", recipe], tiny_overrides(recipe, synthetic_dir))
    run_experiment(cfg, tmp_path)
    for stage in ("stage1", "stage2"):
        train = [m for m in metrics(tmp_path / stage) if m["kind"] == "train"]
        assert len(train) == 2 and all(math.isfinite(m["loss"]) for m in train), (recipe.stem, stage)
    stage1 = [m for m in metrics(tmp_path / "stage1") if m["kind"] == "train"]
    assert {"vtc", "vtm", "vtg"} <= set(stage1[0])
    if recipe.stem == "minigpt4":
        (setup,) = [m for m in metrics(tmp_path / "stage2") if m["kind"] == "setup"]
        projection = 128 * LLM_WIDTH + LLM_WIDTH  # Linear(128 -> LLM width): weight + bias
        assert setup["trainable_params"] == projection
        (stage1_setup,) = [m for m in metrics(tmp_path / "stage1") if m["kind"] == "setup"]
        assert stage1_setup["trainable_params"] > 10 * projection  # stage 1 trains the Q-Former
