"""Tiny inputs and models shared by the tests: tiny-preset backends with random features, the embedded
default's model section with small frames and a random tiny GPT-2, the cascaded experiment on the tiny
synthetic set, and the overrides that shrink any recipe of configs/recipes/ to it."""
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from videoqf.backends import backend_config, build_backend
from videoqf.backends.presets import PRESETS
from videoqf.config import load_config
from videoqf.experiment import ExperimentConfig, load_experiment
from videoqf.models.config import ModelConfig


@dataclass
class ModelOnly:
    model: ModelConfig = field(default_factory=ModelConfig)


def tiny(name, seed=0, **overrides):
    torch.manual_seed(seed)
    return build_backend(name, backend_config(name, overrides, preset="tiny"))


def frames(batch, num_frames, seed=1, tokens=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num_frames, tokens, PRESETS["tiny"].vision_width, generator=g)


def audio(batch, segments=3, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, segments, 2, PRESETS["tiny"].audio_width, generator=g)


def text(batch, length=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, length - 2 :] = False
    return ids, mask


def model_config(variant: str, tmp_path) -> ModelConfig:
    """configs/synthetic.yaml's model section + the variant's file, smaller frames, a random tiny GPT-2."""
    merged = OmegaConf.merge(OmegaConf.load("configs/synthetic.yaml"), OmegaConf.load(f"configs/variants/{variant}.yaml"))
    path = tmp_path / f"{variant}.yaml"
    path.write_text(OmegaConf.to_yaml({"model": merged.model}))
    llm = ["model.llm.arch=causal",
           "model.llm.model_config={model_type: gpt2, n_layer: 1, n_embd: 32, n_head: 2, vocab_size: 96, "
           "n_positions: 128, bos_token_id: 5, eos_token_id: 3, pad_token_id: 0}"]
    return load_config(ModelOnly, path, ["model.vision.image_size=64", *llm]).model


def tiny_overrides(synthetic_dir) -> list[str]:
    return [
        f"data.annotations={synthetic_dir}/train.jsonl", f"eval.annotations={synthetic_dir}/test.jsonl",
        f"eval.pairs={synthetic_dir}/pairs.json", f"model.tokenizer={synthetic_dir}",
        "model.vision.image_size=64", "data.num_frames=4", "train.micro_batch_size=4", "train.progress_bar=false",
        "train.log_every=1", "stages.stage1.steps=3", "stages.stage2.steps=2", "eval.captions_shown=2",
        "eval.max_new_tokens=8", "model.llm.arch=causal",
        "model.llm.model_config={model_type: gpt2, n_layer: 1, n_embd: 32, n_head: 2, vocab_size: 96, "
        "n_positions: 128, bos_token_id: 5, eos_token_id: 3, pad_token_id: 0}",
    ]


def tiny_config(synthetic_dir, *extra: str, variant: str = "cascaded") -> ExperimentConfig:
    return load_experiment(["configs/synthetic.yaml", f"configs/variants/{variant}.yaml"],
                           [*tiny_overrides(synthetic_dir), *extra])


RECIPES = sorted(Path("configs/recipes").glob("*.yaml"))
VARIANTS = sorted(p.stem for p in Path("configs/variants").glob("*.yaml"))
LLM_WIDTH = 32


def recipe_overrides(recipe: Path, synthetic_dir: str) -> list[str]:
    """The synthetic set's paths, a random 1-layer GPT-2, 2 steps per stage, small frames; no evaluation."""
    own = OmegaConf.load(recipe)
    patch14 = "patch14" in OmegaConf.select(own, "model.vision.model_name", default="")
    frames = [] if OmegaConf.select(own, "data.num_frames") is not None else ["data.num_frames=3"]
    stages = {**OmegaConf.load("configs/synthetic.yaml").stages, **OmegaConf.select(own, "stages", default={})}
    return [*[f"stages.{name}.steps=2" for name in stages],
        f"data.annotations={synthetic_dir}/train.jsonl", f"model.tokenizer={synthetic_dir}",
        f"model.vision.image_size={56 if patch14 else 64}", *frames,
        "train.micro_batch_size=3", "train.progress_bar=false", "train.log_every=1",
        "model.llm.arch=causal",
        f"model.llm.model_config={{model_type: gpt2, n_layer: 1, n_embd: {LLM_WIDTH}, n_head: 2, vocab_size: 96, "
        "n_positions: 256, bos_token_id: 5, eos_token_id: 3, pad_token_id: 0}",
    ]


EXPERIMENTS = [*(f"variants/{v}" for v in VARIANTS), *(f"recipes/{r.stem}" for r in RECIPES)]


def tiny_experiment(name: str, synthetic_dir) -> ExperimentConfig:
    """A variant ("variants/cascaded") or a recipe ("recipes/blip2") of EXPERIMENTS, shrunk to the tiny synthetic set
    (no feature cache: the frozen encoders run)."""
    kind, stem = name.split("/")
    if kind == "variants":
        return tiny_config(synthetic_dir, variant=stem)
    recipe = Path("configs/recipes") / f"{stem}.yaml"
    return load_experiment(["configs/synthetic.yaml", recipe], recipe_overrides(recipe, synthetic_dir))


def stage_losses(cfg: ExperimentConfig, model, train, device: torch.device, dtype: torch.dtype | None):
    """(stage name, loss) for each stage of ``cfg`` in the run's order, on 3 training items: the stage's parameters
    unlocked, the LLM's head copied where a run copies it, the batch on ``device`` in ``dtype``."""
    from videoqf.models.groups import lock
    from videoqf.objectives import build_objective
    from videoqf.recipes.run import make_collate
    from videoqf.train.loop import to_device

    first_caption = next((n for n, s in cfg.stages.items() if s.objective == "caption"), None)
    for name, stage in cfg.stages.items():
        if name == first_caption and model.llm_head is not None:
            model.copy_head_for_llm()
        lock(model, stage.train, stage.freeze)
        batch = make_collate(cfg, model.tokenizer, stage.tasks)([train[i] for i in range(3)])
        yield name, build_objective(stage.objective, model)(model, to_device(batch, device, dtype))["loss"]
