"""Every recipe of configs/recipes/ trains a few steps of each stage on the tiny synthetic set, and is the system it
names: what trains and what stays frozen in each stage, what the Q-Former reads, the stage list; no two recipes are
one config."""
import json
import math
from pathlib import Path

from dataclasses import replace

import pytest
import torch

from _tiny import LLM_WIDTH, RECIPES, recipe_overrides
from videoqf.backends import backend_config
from videoqf.config import to_yaml
from videoqf.data.synthetic import load_tokenizer
from videoqf.experiment import EvalConfig, load_experiment
from videoqf.models.groups import lock
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.pretrained import load_pretrained
from videoqf.recipes.run import run_experiment
from videoqf.train.config import TrainConfig

def metrics(stage_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_trains_both_stages(recipe, synthetic_dir, tmp_path):
    cfg = load_experiment(["configs/synthetic.yaml", recipe], recipe_overrides(recipe, synthetic_dir))
    run_experiment(cfg, tmp_path)
    for stage in cfg.stages:
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


def recipe(name: str, synthetic_dir: str):
    path = Path(f"configs/recipes/{name}.yaml")
    return load_experiment(["configs/synthetic.yaml", path], recipe_overrides(path, synthetic_dir))


def trainable(cfg, model=None) -> dict[str, set[str]]:
    """Stage name -> the parameter names it trains (the model built from the config, locked per stage)."""
    model = model or VideoLanguageModel(cfg.model, load_tokenizer(cfg.model.tokenizer))
    return {name: set(lock(model, s.train, s.freeze)) for name, s in cfg.stages.items()}


def parts(names: set[str]) -> set[str]:
    """backend.head.layers.0... -> backend.head; bridge.projector.net.weight -> bridge.projector."""
    return {".".join(n.split(".")[:2]) for n in names}


def signature(cfg) -> str:
    """What makes a recipe its system: the model section and the stage list with what each trains on what."""
    return to_yaml(replace(cfg, eval=EvalConfig(), train=TrainConfig()))


def test_no_two_recipes_are_one_config(synthetic_dir):
    signatures = {r.stem: signature(recipe(r.stem, synthetic_dir)) for r in RECIPES}
    same = [(a, b) for a in signatures for b in signatures if a < b and signatures[a] == signatures[b]]
    assert not same


def test_blip2_trains_the_qformer_and_projection_through_the_frozen_llm(synthetic_dir):
    cfg = recipe("blip2", synthetic_dir)
    assert (cfg.model.variant, cfg.data.num_frames, list(cfg.stages)) == ("meanpool", 1, ["stage1", "stage2"])
    assert [s.objective for s in cfg.stages.values()] == ["stage1", "caption"]
    stages = trainable(cfg)
    assert parts(stages["stage2"]) == {"backend.head", "bridge.projector"}
    assert not any(n.startswith("bridge.llm.") for names in stages.values() for n in names)


def test_minigpt4_trains_one_linear_over_a_frozen_qformer_then_a_short_instruction_stage(synthetic_dir):
    cfg = recipe("minigpt4", synthetic_dir)
    assert list(cfg.stages) == ["stage1", "stage2", "instruct"] and cfg.data.num_frames == 1
    assert cfg.stages["instruct"].tasks == ["caption"]
    declared = load_experiment(["configs/synthetic.yaml", "configs/recipes/minigpt4.yaml"],
                               ["model.llm.arch=causal", "model.llm.path=unset"]).stages
    assert declared["instruct"].steps < declared["stage2"].steps / 4
    model = VideoLanguageModel(cfg.model, load_tokenizer(cfg.model.tokenizer))
    assert isinstance(model.bridge.projector.net, torch.nn.Linear)
    stages = trainable(cfg, model)
    for name in ("stage2", "instruct"):
        assert stages[name] == {"bridge.projector.net.weight", "bridge.projector.net.bias"}


def test_instructblip_tunes_the_qformer_on_instructions_it_reads(synthetic_dir):
    cfg = recipe("instructblip", synthetic_dir)
    instruct = cfg.stages["instruct"]
    assert cfg.model.variant == "framewise" and cfg.model.llm.instruction_aware
    assert set(instruct.tasks) == {"caption", "order", "sound", "colour"} and instruct.objective == "caption"
    model = VideoLanguageModel(cfg.model, load_tokenizer(cfg.model.tokenizer)).eval()
    assert parts(trainable(cfg, model)["instruct"]) == {"backend.head", "bridge.projector"}
    frames = torch.randn(1, 2, 3, 64, 64)
    batch = {"frames": frames, "frame_mask": torch.ones(1, 2, dtype=torch.bool)}
    with torch.no_grad():  # the Q-Former's text branch reads the question: its queries change with it
        first, sound = (model.encode_for_llm(batch, [q]).tokens for q in ("what happens first?", "what sound plays?"))
    assert not torch.allclose(first, sound)


def test_video_llama_keeps_the_frame_qformer_frozen_and_trains_video_qformer_and_audio(synthetic_dir):
    cfg = recipe("video-llama", synthetic_dir)
    assert (cfg.model.variant, cfg.data.num_frames, cfg.model.use_audio) == ("cascaded", 8, True)
    stages = trainable(cfg)
    assert not any(n.startswith(("backend.frame_qformer.", "backend.ln_vision.")) for s in stages.values() for n in s)
    assert "backend.head" in parts(stages["stage1"])
    assert any(n.startswith("backend.audio_branch.") for n in stages["stage2"])


def test_video_qformer_is_spatiotemporal_with_the_image_qformers_queries(synthetic_dir):
    video, image = recipe("video-qformer", synthetic_dir), recipe("blip2", synthetic_dir)
    assert video.model.variant == "spatiotemporal" and video.model.backend["experts"]
    st, mp = (backend_config(c.model.variant, c.model.backend, preset=c.model.preset) for c in (video, image))
    assert st.head_config.num_queries == mp.qformer.num_queries  # so model.init_from=<blip2 run> fits it


def test_video_chatgpt_reads_pooled_tokens_through_a_linear_into_the_frozen_llm(synthetic_dir):
    cfg = recipe("video-chatgpt", synthetic_dir)
    model = VideoLanguageModel(cfg.model, load_tokenizer(cfg.model.tokenizer))
    assert cfg.model.variant == "pooled" and isinstance(model.bridge.projector.net, torch.nn.Linear)
    assert trainable(cfg, model)["stage2"] == {"bridge.projector.net.weight", "bridge.projector.net.bias"}


def test_video_recipes_start_from_the_blip2_run(synthetic_dir, tmp_path):
    run_experiment(recipe("blip2", synthetic_dir), tmp_path / "blip2")
    image = load_pretrained(tmp_path / "blip2")
    for name in ("video-llama", "video-qformer"):
        path = Path(f"configs/recipes/{name}.yaml")
        cfg = load_experiment(["configs/synthetic.yaml", path],
                              [*recipe_overrides(path, synthetic_dir), f"model.init_from={tmp_path / 'blip2'}"])
        run_experiment(cfg, tmp_path / name)
        report = json.loads((tmp_path / name / "init_from.json").read_text())
        assert report["variant"] == cfg.model.variant and report["copied"] and report["new"]
    video = load_pretrained(tmp_path / "video-llama")  # trained two stages with its frame Q-Former frozen
    for key, value in video.backend.frame_qformer.state_dict().items():
        torch.testing.assert_close(value, image.backend.head.state_dict()[key], msg=key)
    with pytest.raises(ValueError, match="image model"):
        run_experiment(replace(cfg, model=replace(cfg.model, init_from=str(tmp_path / "video-llama"))), tmp_path / "x")
