"""``model.*`` settings: which backend, the frozen encoders, the stage-1 objectives and the frozen LLM."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from videoqf.encoders.config import AudioEncoderConfig, VisionEncoderConfig
from videoqf.llm.config import LLMConfig
from videoqf.objectives.config import ObjectivesConfig


@dataclass
class ModelConfig:
    """tokenizer: directory (or tokenizer.json) of the text tokenizer, shared by the Q-Former's text branch
    and the LLM. variant: a name in ``videoqf.backends.BACKENDS``; preset: that backend's "default" (BLIP-2 /
    Video-LLaMA sizes) or "tiny" sizes; backend: overrides of the variant's config dataclass (checked
    against it when the model is built, e.g. ``model.backend.audio=false``).

    frozen_init_seed: seed of the frozen encoders' weights when they are random (``allow_random``), so
    every process, a resumed run and ``tools/caption.py`` build the very same encoder; their weight hash
    is checked against the checkpoint's.

    standardize_features: shift and scale each (token, channel) of the frozen encoders' outputs by its
    mean and std over ``standardize_clips`` training clips (``videoqf.modules.standardize``), fitted once
    before training and saved with the learned weights.

    init_from: an image checkpoint (a released transformers folder's or this project's image model: a run, a
    checkpoint or a saved folder) that a training run starts from before its first stage, by the variant's
    plan (``videoqf.pretrained.init_from``); empty: every learned weight starts fresh.
    """

    variant: str = "cascaded"
    tokenizer: str = ""
    preset: str = "default"
    backend: dict[str, Any] = field(default_factory=dict)
    vision: VisionEncoderConfig = field(default_factory=VisionEncoderConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    use_audio: bool = True
    objectives: ObjectivesConfig = field(default_factory=ObjectivesConfig)
    llm: Optional[LLMConfig] = None
    max_text_len: int = 32
    frozen_init_seed: int = 0
    standardize_features: bool = False
    standardize_clips: int = 512
    init_from: str = ""
