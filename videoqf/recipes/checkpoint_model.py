"""Rebuild a trained ``VideoLanguageModel`` from a self-contained checkpoint directory (for inference).

A checkpoint directory (see ``videoqf.recipes.run``) holds ``experiment.yaml``, ``tokenizer/``, ``lm/``
and ``learned/``; the frozen encoders are rebuilt from the config and checked by weight hash.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from videoqf.config import load_config
from videoqf.data.collate import collate_clips
from videoqf.data.config import config_sampler
from videoqf.data.video import load_clip
from videoqf.experiment import ExperimentConfig
from videoqf.llm.config import MAX_NEW_TOKENS
from videoqf.llm.tokenizer import load_tokenizer
from videoqf.models.io import load_learned
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.recipes.features import clip_overrides
from videoqf.recipes.run import CONFIG_NAME
from videoqf.train.checkpoint import resolve_checkpoint
from videoqf.train.loop import to_device


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from itself, a stage directory or a run directory (its last stage that has a
    checkpoint, in the order of the run's ``experiment.yaml``)."""
    path = Path(path)
    if (path / "learned").is_dir():
        return path
    if (path / "checkpoints").is_dir():
        return resolve_checkpoint(path / "checkpoints")
    if (path / CONFIG_NAME).is_file():
        stages = list(OmegaConf.load(path / CONFIG_NAME).get("stages", {}))
        for name in reversed(stages):
            if (path / name / "checkpoints").is_dir():
                return resolve_checkpoint(path / name / "checkpoints")
    raise FileNotFoundError(f"no checkpoint under {path} (expected a checkpoint, a stage directory with "
                            f"checkpoints/, or a run directory with {CONFIG_NAME})")


def load_model(path: str | Path) -> tuple[VideoLanguageModel, ExperimentConfig, Path]:
    ckpt = find_checkpoint(path)
    overrides = [f"model.tokenizer={ckpt / 'tokenizer'}"]
    if (ckpt / "lm").is_dir():
        overrides.append(f"model.llm.path={ckpt / 'lm'}")
    cfg = load_config(ExperimentConfig, ckpt / CONFIG_NAME, overrides)
    model = VideoLanguageModel(cfg.model, load_tokenizer(cfg.model.tokenizer))
    load_learned(model, ckpt / "learned")
    return model.eval(), cfg, ckpt


def clip_batch(model: VideoLanguageModel, cfg: ExperimentConfig, path: str, *, start=None, end=None) -> dict:
    """One video decoded the way the model was trained (sampler, frame count, encoder's image config)."""
    clip = load_clip(path, config_sampler(cfg.data), start=start, end=end, audio=cfg.model.use_audio,
                     **clip_overrides(model.vision))
    item = {**clip.media(), "caption": "", "video_id": 0, "path": path, "index": 0}
    batch = collate_clips([item])
    batch["window"] = clip.window
    return batch


@torch.no_grad()
def caption_video(model: VideoLanguageModel, cfg: ExperimentConfig, path: str, *, start=None, end=None,
                  prompt: str | None = None, beams: int = 1, max_new_tokens: int = MAX_NEW_TOKENS) -> tuple[str, tuple]:
    batch = clip_batch(model, cfg, path, start=start, end=end)
    batch = to_device(batch, next(model.parameters()).device, None)  # the frames and audio where the model runs
    text = model.caption(batch, prompts=None if prompt is None else [prompt], num_beams=beams,
                         max_new_tokens=max_new_tokens)[0]
    return text, batch["window"]
