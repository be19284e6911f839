"""Typed configuration of the data part, and the one function that turns it into a dataset."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from videoqf.data.annotations import read_annotations
from videoqf.data.cached import CachedFeatureDataset
from videoqf.data.dataset import VideoTextDataset
from videoqf.data.extract import RANDOM_SAMPLERS
from videoqf.data.feature_cache import CacheSpec, FeatureCache
from videoqf.data.samplers import build_sampler


@dataclass
class DataConfig:
    """``data.*`` keys. Frames are decoded at the vision encoder's own size and normalisation
    (``build_dataset``'s ``image_size`` / ``mean`` / ``std``); the DataLoader's workers are ``train.num_workers``."""

    annotations: str = ""
    video_root: str | None = None  # None: the annotation file's folder
    format: str = "auto"  # jsonl | csv | msrvtt | webvid | auto
    split: str | None = None  # MSR-VTT split filter ("train", "validate", "test")
    sampler: str = "uniform"
    sampler_kwargs: dict = field(default_factory=dict)  # e.g. {"target_fps": 2.0} for "fps"
    num_frames: int = 8
    audio: bool = True
    caption_mode: str = "random"
    max_bad_fraction: float = 0.01
    seed: int = 0
    features: str = ""  # a feature cache (tools/extract_features.py): read encoder outputs, decode nothing
    instructions: list[str] = field(default_factory=list)  # prompt templates, one per item (models/collate.py)


def sampler_id(cfg: DataConfig) -> str:
    """The sampler as the cache spec records it: its name, and its arguments when it has any."""
    return cfg.sampler + (json.dumps(cfg.sampler_kwargs, sort_keys=True) if cfg.sampler_kwargs else "")


def cache_spec(cfg: DataConfig, vision, audio=None) -> CacheSpec:
    """The spec of features made for ``cfg`` by these frozen encoders (``audio`` None when ``cfg.audio`` is
    off); a random sampler's draw depends on ``cfg.seed``, a deterministic one's on nothing."""
    return CacheSpec.from_encoders(vision, audio if cfg.audio else None, sampler=sampler_id(cfg),
                                   sampler_seed=cfg.seed if cfg.sampler in RANDOM_SAMPLERS else None,
                                   num_frames=cfg.num_frames)


def config_sampler(cfg: DataConfig):
    """The frame sampler ``cfg`` names (``data.sampler``, ``data.num_frames``, ``data.sampler_kwargs``)."""
    return build_sampler(cfg.sampler, num_frames=cfg.num_frames, **cfg.sampler_kwargs)


def build_dataset(cfg: DataConfig, *, image_size: int, mean, std, expected_spec: CacheSpec | None = None,
                  **clip_kwargs) -> VideoTextDataset | CachedFeatureDataset:
    """Dataset for ``cfg`` decoding frames at ``image_size`` with ``mean`` / ``std`` (the vision encoder's:
    ``videoqf.recipes.features.clip_overrides``); ``clip_kwargs`` go to ``VideoTextDataset`` (``backend``).

    With ``cfg.features`` set, a ``CachedFeatureDataset`` over that cache, which must have been made with
    ``expected_spec`` (``cache_spec(cfg, model.vision, model.audio)``); another spec is refused.
    """
    if not cfg.annotations:
        raise ValueError("data.annotations is empty: set it to an annotation file")
    if cfg.features and expected_spec is None:
        raise ValueError(f"data.features={cfg.features!r}: build_dataset needs expected_spec= "
                         "(videoqf.data.config.cache_spec(cfg, vision, audio)) to check the cache against")
    extra = {"split": cfg.split} if cfg.split is not None else {}
    records = read_annotations(cfg.annotations, format=cfg.format, video_root=cfg.video_root, **extra)
    sampler = config_sampler(cfg)
    dataset = VideoTextDataset(records, sampler, image_size=image_size, mean=mean, std=std, audio=cfg.audio,
                               max_bad_fraction=cfg.max_bad_fraction, caption_mode=cfg.caption_mode, seed=cfg.seed,
                               **clip_kwargs)
    if cfg.features:
        return CachedFeatureDataset(dataset, FeatureCache(cfg.features, expected_spec))
    return dataset
