"""Typed configuration of the data part, and the one function that turns it into a dataset."""
from __future__ import annotations

from dataclasses import dataclass, field

from videoqf.data.annotations import read_annotations
from videoqf.data.dataset import VideoTextDataset
from videoqf.data.samplers import build_sampler


@dataclass
class DataConfig:
    """``data.*`` keys. ``mean``/``std``/``image_size`` normally come from the vision encoder's data config."""

    annotations: str = ""
    video_root: str | None = None  # None: the annotation file's folder
    format: str = "auto"  # jsonl | csv | msrvtt | webvid | auto
    split: str | None = None  # MSR-VTT split filter ("train", "validate", "test")
    sampler: str = "uniform"
    sampler_kwargs: dict = field(default_factory=dict)  # e.g. {"target_fps": 2.0} for "fps"
    num_frames: int = 8
    image_size: int = 224
    audio: bool = True
    caption_mode: str = "random"
    max_bad_fraction: float = 0.01
    num_workers: int = 2
    seed: int = 0


def build_dataset(cfg: DataConfig, **clip_overrides) -> VideoTextDataset:
    """Dataset for ``cfg``; ``clip_overrides`` (``mean``, ``std``, ``image_size``, ``backend``) win over it."""
    if not cfg.annotations:
        raise ValueError("data.annotations is empty: set it to an annotation file")
    extra = {"split": cfg.split} if cfg.split is not None else {}
    records = read_annotations(cfg.annotations, format=cfg.format, video_root=cfg.video_root, **extra)
    sampler = build_sampler(cfg.sampler, num_frames=cfg.num_frames, **cfg.sampler_kwargs)
    kwargs = dict(image_size=cfg.image_size, audio=cfg.audio, max_bad_fraction=cfg.max_bad_fraction,
                  caption_mode=cfg.caption_mode, seed=cfg.seed)
    return VideoTextDataset(records, sampler, **{**kwargs, **clip_overrides})
