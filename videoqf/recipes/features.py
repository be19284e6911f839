"""Make sure the frozen encoders' outputs for some annotation files are in the feature cache.

Extraction skips clips already cached and refuses a cache made with other encoders / sampler, so calling
this before every run is cheap once the cache is complete.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from videoqf.config import to_yaml
from videoqf.data.config import DataConfig, build_dataset, cache_spec
from videoqf.data.extract import ExtractStats, extract_features
from videoqf.data.feature_cache import FORMAT_VERSION, CacheSpec
from videoqf.io import file_lock


def config_digest(parts) -> str:
    """A short name for a config (dataclass or dict of them): what a cached product of it is kept under."""
    return hashlib.sha256(to_yaml(parts).encode()).hexdigest()[:12]


def feature_digest(cfg, root: str | Path | None = None) -> str:
    """A short name for everything an experiment's cached features depend on (data, encoders, seed). Annotations
    under ``root`` (the cache they sit in) are named from there on, so a cache moved or made on another machine
    keeps the same name."""
    annotations = Path(cfg.data.annotations)
    if root is not None and annotations.is_relative_to(root):
        annotations = annotations.relative_to(root)
    parts = {"format": FORMAT_VERSION, "annotations": str(annotations), "sampler": cfg.data.sampler,
             "sampler_kwargs": cfg.data.sampler_kwargs, "num_frames": cfg.data.num_frames,
             "audio": cfg.data.audio and cfg.model.use_audio,
             "vision": cfg.model.vision, "audio_encoder": cfg.model.audio, "seed": cfg.model.frozen_init_seed}
    return config_digest(parts)


def clip_overrides(vision) -> dict:
    """Decode clips at the vision encoder's own image size and normalisation."""
    clip = vision.data_config
    return dict(image_size=clip["image_size"], mean=tuple(clip["mean"]), std=tuple(clip["std"]))


def extraction_device() -> torch.device:
    """Where the frozen encoders extract: this process's GPU (its local rank's) when torch sees one, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


@contextmanager
def encoders_on(device: torch.device, *encoders: nn.Module | None):
    """The encoders moved to ``device`` for the block, then back where each was (a model's encoders stay with it)."""
    present = [e for e in encoders if e is not None]
    homes = [next(e.parameters()).device for e in present]
    for encoder in present:
        encoder.to(device)
    try:
        yield
    finally:
        for encoder, home in zip(present, homes):
            encoder.to(home)


def ensure_features(data: DataConfig, annotation_files: list[str], vision, audio, *, out_dir: str,
                    batch_size: int = 16, shard_size: int = 256, progress: bool = True,
                    device: torch.device | None = None) -> tuple[CacheSpec, list[ExtractStats]]:
    """Extract every clip of ``annotation_files`` into ``out_dir`` with the encoders on ``device`` (default
    ``extraction_device()``); returns the cache spec and per-file stats."""
    spec = cache_spec(data, vision, audio)
    stats = []
    with encoders_on(device or extraction_device(), vision, audio):
        for annotation_file in annotation_files:
            dataset = build_dataset(replace(data, annotations=annotation_file, features=""), **clip_overrides(vision))
            stats.append(extract_features(dataset, vision, audio if spec.audio_encoder else None, out_dir,
                                          sampler_name=spec.sampler, sampler_seed=spec.sampler_seed,
                                          num_frames=spec.num_frames, batch_size=batch_size, shard_size=shard_size,
                                          progress=progress))
    return spec, stats


def experiment_features(cfg, vision, audio) -> CacheSpec:
    """Fill ``cfg.data.features`` with the training and held-out clips it lacks; one process extracts while
    the others (ranks, a background extraction) wait on the lock and then find the cache made."""
    files = [cfg.data.annotations] + ([cfg.eval.annotations] if cfg.eval.annotations else [])
    with file_lock(cfg.data.features.rstrip("/") + ".lock"):
        spec, _ = ensure_features(cfg.data, files, vision, audio, out_dir=cfg.data.features)
    return spec
