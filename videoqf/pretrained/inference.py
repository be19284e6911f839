"""What the inference tools read from ``--checkpoint``: a model and the run config its clips are decoded by.

This project's checkpoints carry their run config (``videoqf.recipes.checkpoint_model``). A released folder
carries none, so the clip decoding follows the checkpoint: its processor's image size and normalisation (the
vision tower's ``data_config``), one frame (the middle one) for an image model, InstructBLIP-Video's four
frames for a video one, spread uniformly over the clip; ``num_frames`` sets another count.
"""
from __future__ import annotations

from pathlib import Path

from videoqf.data.config import DataConfig
from videoqf.experiment import ExperimentConfig
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.pretrained import load_pretrained
from videoqf.pretrained.hf import hf_model_type

VIDEO_FRAMES = {"instructblipvideo": 4}  # InstructBLIP-Video's processor inserts the queries of four frames


def load_checkpoint(path: str | Path, *, num_frames: int | None = None, **overrides
                    ) -> tuple[VideoLanguageModel, ExperimentConfig, Path]:
    """(model in eval mode, run config, folder) for any folder ``load_pretrained`` takes; ``overrides`` go to
    it (a released folder's ``dtype``, ``prompt``, ...)."""
    path = Path(path).expanduser()
    model_type = hf_model_type(path) if path.is_dir() else None
    if model_type is None:
        from videoqf.recipes.checkpoint_model import load_model

        if num_frames is not None or overrides:
            raise ValueError(f"{path}: this project's checkpoints take their settings (frames, dtype, prompt) from "
                             "their run config; these options are for released folders")
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}")
        return load_model(path)
    model = load_pretrained(path, **overrides)
    frames = num_frames or VIDEO_FRAMES.get(model_type, 1)
    cfg = ExperimentConfig(model=model.config, data=DataConfig(sampler="uniform", num_frames=frames, audio=False))
    return model, cfg, path
