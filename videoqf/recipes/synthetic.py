"""The embedded default: its ingredients, made on the spot and kept in a cache directory, and its config.

``prepare_synthetic`` writes the synthetic diagnostic world (videos, annotations, pairs, tokenizer);
``prepare_caption_lm`` pre-trains the tiny causal LM that stage 2 keeps frozen. Both are skipped when
their output is already complete (a marker file is written last), so a second run starts training at once.
``embedded_experiment`` is the one place that assembles the default's config (``tools/train_video.py`` and
the sweep call it): configs/synthetic.yaml, a variant or recipe file, the made paths, then the user's overrides.
"""
from __future__ import annotations

import os
from pathlib import Path

from dataclasses import replace
from typing import Sequence

from videoqf.data.synthetic import SyntheticConfig, generate, load_tokenizer
from videoqf.data.synthetic.generate import WORLD_VERSION
from videoqf.experiment import ExperimentConfig, load_experiment
from videoqf.io import file_lock
from videoqf.llm.config import CaptionLMConfig
from videoqf.llm.pretrain import pretrain_caption_lm, read_captions
from videoqf.recipes.features import config_digest, feature_digest

DONE = ".complete"
CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs"
EMBEDDED_CLIPS = 3000  # size of the embedded synthetic world (a tenth held out)


def cache_root() -> Path:
    """``$VIDEOQF_CACHE``, else ``~/.cache/videoqf``."""
    return Path(os.environ.get("VIDEOQF_CACHE", Path.home() / ".cache" / "videoqf"))


def synthetic_dir(config: SyntheticConfig) -> Path:
    """Where the cache keeps the embedded world of ``config`` (its clip count, seed and kind of objects)."""
    kind = "-persistent" if config.persistent_objects else ""
    return cache_root() / f"synthetic-v{WORLD_VERSION}-{config.num}-seed{config.seed}{kind}"


def prepare_synthetic(out_dir: Path, config: SyntheticConfig) -> Path:
    """The synthetic set in ``out_dir`` (generated when missing or incomplete)."""
    out_dir = Path(out_dir)
    with file_lock(out_dir.with_name(out_dir.name + ".lock")):
        if not (out_dir / DONE).exists():
            print(f"making the synthetic world ({config.num} clips) in {out_dir} ...", flush=True)
            generate(str(out_dir), config, progress=True)
            (out_dir / DONE).write_text("ok\n")
    return out_dir


def prepare_caption_lm(data_dir: Path, out_dir: Path, config: CaptionLMConfig) -> Path:
    """A tiny GPT-2 pre-trained on the training captions, saved with ``save_pretrained`` in ``out_dir``."""
    out_dir = Path(out_dir)
    with file_lock(out_dir.with_name(out_dir.name + ".lock")):
        if not (out_dir / DONE).exists():
            print(f"pre-training the caption LM ({config.steps} steps) into {out_dir} ...", flush=True)
            captions = read_captions([str(Path(data_dir) / "train.jsonl")])
            pretrain_caption_lm(captions, load_tokenizer(str(data_dir)), config, out_dir=str(out_dir), progress=True)
            (out_dir / DONE).write_text("ok\n")
    return out_dir


def embedded_experiment(model_file: str | Path, overrides: Sequence[str] = (), *, num_clips: int = EMBEDDED_CLIPS,
                        persistent_objects: bool = False) -> ExperimentConfig:
    """configs/synthetic.yaml under ``model_file`` (a variant or recipe YAML) and ``overrides``, on the embedded
    world of ``num_clips`` clips. The config is checked first (a typo fails before anything is made); then the
    world and its caption LM are made if missing, and the frozen encoders' features get a cache named after what
    they depend on (unless ``data.features`` is given)."""
    files = [CONFIGS / "synthetic.yaml", Path(model_file)]
    load_experiment(files, ["model.llm.arch=causal", "model.llm.path=unset", *overrides])
    world = SyntheticConfig(num=num_clips, seed=0, persistent_objects=persistent_objects)
    data = prepare_synthetic(synthetic_dir(world), world)
    lm_config = CaptionLMConfig()  # pre-trained on the world's captions, so named after it
    lm = prepare_caption_lm(data, cache_root() / f"caption-lm-{data.name}-{config_digest(lm_config)}", lm_config)
    made = [f"data.annotations={data / 'train.jsonl'}", f"eval.annotations={data / 'test.jsonl'}",
            f"eval.pairs={data / 'pairs.json'}", f"model.tokenizer={data}", "model.llm.arch=causal",
            f"model.llm.path={lm}"]
    cfg = load_experiment(files, [*made, *overrides])
    if cfg.data.features:
        return cfg
    return replace(cfg, data=replace(cfg.data, features=str(cache_root() / f"features-{feature_digest(cfg)}")))
