"""The frozen encoders of a ``ModelConfig``, built the one way the model, the feature extractor and the
captioner all build them: random weights (``allow_random``) are a function of ``frozen_init_seed`` alone."""
from __future__ import annotations

import torch

from videoqf.encoders.audio import FrozenAudioEncoder
from videoqf.encoders.vision import FrozenVisionEncoder
from videoqf.models.config import ModelConfig


def build_frozen_encoders(config: ModelConfig) -> tuple[FrozenVisionEncoder, FrozenAudioEncoder | None]:
    """(vision, audio or None when ``use_audio`` is off), under ``config.frozen_init_seed``; the caller's
    RNG state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.frozen_init_seed)
        vision = FrozenVisionEncoder(config.vision)
        audio = FrozenAudioEncoder(config.audio) if config.use_audio else None
    return vision, audio
