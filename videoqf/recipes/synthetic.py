"""The embedded default: its ingredients, made on the spot and kept in a cache directory, and its config.

``prepare_synthetic`` writes the synthetic diagnostic world (videos, annotations, pairs, tokenizer);
``prepare_caption_lm`` pre-trains the tiny causal LM that stage 2 keeps frozen, while a second process fills
the feature cache. Each is skipped when its output is already complete (a marker file is written last, and the
cache skips what it holds), so a second run starts training at once.
``embedded_experiment`` is the one place that assembles the default's config (``tools/train_video.py`` and
the sweep call it): configs/synthetic.yaml, a variant or recipe file, the made paths, then the user's overrides.
"""
from __future__ import annotations

import os
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import torch

from videoqf.data.synthetic import SyntheticConfig, generate, load_tokenizer
from videoqf.data.synthetic.generate import world_version
from videoqf.experiment import ExperimentConfig, load_experiment
from videoqf.io import file_lock
from videoqf.llm.config import CaptionLMConfig
from videoqf.llm.pretrain import pretrain_caption_lm, read_captions
from videoqf.models.frozen import build_frozen_encoders
from videoqf.recipes.features import config_digest, experiment_features, feature_digest

DONE = ".complete"
CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs"
EMBEDDED_CLIPS = 3000  # size of the embedded synthetic world (a tenth held out)


def cache_root() -> Path:
    """``$VIDEOQF_CACHE``, else ``~/.cache/videoqf``."""
    return Path(os.environ.get("VIDEOQF_CACHE", Path.home() / ".cache" / "videoqf"))


def synthetic_dir(config: SyntheticConfig) -> Path:
    """Where the cache keeps the embedded world of ``config`` (its clip count, seed and kind of objects)."""
    kind = "-persistent" if config.persistent_objects else ""
    return cache_root() / f"synthetic-v{world_version(config.persistent_objects)}-{config.num}-seed{config.seed}{kind}"


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
    lm = cache_root() / f"caption-lm-{data.name}-{config_digest(lm_config)}"
    made = [f"data.annotations={data / 'train.jsonl'}", f"eval.annotations={data / 'test.jsonl'}",
            f"eval.pairs={data / 'pairs.json'}", f"model.tokenizer={data}", "model.llm.arch=causal",
            f"model.llm.path={lm}"]
    cfg = load_experiment(files, [*made, *overrides])
    if not cfg.data.features:
        features = cache_root() / f"features-{feature_digest(cfg, cache_root())}"
        cfg = replace(cfg, data=replace(cfg.data, features=str(features)))
    extraction = None
    if not (lm / DONE).exists():
        # the caption LM and the frozen encoders' features are independent: make them side by side
        extraction = get_context("spawn").Process(target=_extract_features, args=(cfg,), daemon=True)
        extraction.start()
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads - 1) if extraction else threads)
    try:
        prepare_caption_lm(data, lm, lm_config)
    finally:
        torch.set_num_threads(threads)
        if extraction is not None:
            extraction.join()
    if extraction is not None and extraction.exitcode:
        print(f"feature extraction beside the caption LM failed (exit code {extraction.exitcode}); it runs again "
              "before training", flush=True)
    return cfg


def _extract_features(cfg: ExperimentConfig) -> None:
    """Fill the experiment's feature cache on one thread (a process beside the caption LM's pre-training)."""
    torch.set_num_threads(1)
    experiment_features(cfg, *build_frozen_encoders(cfg.model))
