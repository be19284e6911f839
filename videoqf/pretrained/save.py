"""This project's format for a whole model: ``save_pretrained(model, DIR)`` and ``load_saved(DIR)``.

    DIR/videoqf.yaml        what to build: the ModelConfig, and for parts that came from a released checkpoint
                            (transformers' vision tower, the LLM behind the projector) their configs
    DIR/model.safetensors   every tensor, frozen parts and non-persistent buffers included, each stored once
                            (tied tensors are listed under ``tied`` in the YAML)
    DIR/tokenizer/          the Q-Former's tokenizer (when the model has one)
    DIR/llm_tokenizer/      the LLM's tokenizer (when the model has an LLM)

A model built from a config alone (the synthetic world's: timm encoders, a config LLM) is rebuilt from the
ModelConfig and the tensors are loaded over it; one with parts from a released checkpoint is rebuilt on the
meta device and takes the saved tensors as they are, so no random initialisation of a big model comes first.
"""
from __future__ import annotations

from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    Blip2VisionModel,
    InstructBlipVideoVisionModel,
    InstructBlipVisionModel,
)

from videoqf.llm.bridge import VideoLLMBridge
from videoqf.llm.frozen_lm import FrozenLLM
from videoqf.llm.projector import Projector
from videoqf.llm.tokenizer import load_tokenizer
from videoqf.models.config import ModelConfig
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.pretrained.vision import PretrainedVisionEncoder

SPEC = "videoqf.yaml"
WEIGHTS = "model.safetensors"
VISION = {c.config_class.model_type: (c.config_class, c) for c in
          (Blip2VisionModel, InstructBlipVisionModel, InstructBlipVideoVisionModel)}


def _tensors(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every parameter and buffer by name, each storage once: (tensors, alias -> stored name)."""
    tensors, tied, seen = {}, {}, {}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, t in named:
        if id(t) in seen:
            tied[name] = seen[id(t)]
            continue
        seen[id(t)] = name
        tensors[name] = t.detach().cpu().contiguous()
    return tensors, tied


def save_pretrained(model: VideoLanguageModel, directory: str | Path) -> Path:
    """Write ``model`` in this project's format into ``directory``; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, tied = _tensors(model)
    spec: dict = {"model": OmegaConf.to_container(OmegaConf.structured(model.config)), "tied": tied}
    if isinstance(model.vision, PretrainedVisionEncoder):
        data = model.vision.data_config
        spec["vision"] = {"config": model.vision.model.config.to_dict(),
                          "image": {"image_size": data["image_size"], "mean": list(data["mean"]),
                                    "std": list(data["std"])}}
    if model.bridge is not None and model.config.llm is None:
        projector = model.bridge.projector
        spec["bridge"] = {"llm": model.bridge.llm.model.config.to_dict(), "video_dim": projector.net.in_features,
                          "prompt": model.bridge.prompt, "instruction_aware": model.bridge.instruction_aware,
                          "max_text_len": model.bridge.max_text_len}
        if not isinstance(projector.net, torch.nn.Linear):
            raise ValueError("save_pretrained: a bridge built outside the config must have a linear projector")
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(directory / "tokenizer"))
    if model.bridge is not None:
        model.bridge.tokenizer.save_pretrained(str(directory / "llm_tokenizer"))
    (directory / SPEC).write_text(yaml.safe_dump(spec, sort_keys=False))
    save_file(tensors, str(directory / WEIGHTS))
    return directory


def is_saved(path: Path) -> bool:
    return (path / SPEC).is_file()


def _set(model: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    """Put ``value`` in place of tensor ``name``; a Parameter given is shared as it is (a tie)."""
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    if attr in owner._parameters:
        old = owner._parameters[attr]
        shared = isinstance(value, torch.nn.Parameter)
        owner._parameters[attr] = value if shared else torch.nn.Parameter(value, requires_grad=old.requires_grad)
    elif attr in owner._buffers:
        owner._buffers[attr] = value
    else:
        raise KeyError(f"{name} is neither a parameter nor a buffer of the rebuilt model")


def load_saved(directory: str | Path) -> VideoLanguageModel:
    """The model ``save_pretrained`` wrote, in eval mode and the stage it can run (2 with an LLM)."""
    directory = Path(directory).expanduser()
    spec = yaml.safe_load((directory / SPEC).read_text())
    file = directory / WEIGHTS
    if not file.is_file():
        raise FileNotFoundError(f"no weights at {file}")
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), spec["model"]))
    qtok = load_tokenizer(directory / "tokenizer") if (directory / "tokenizer").is_dir() else None
    llm_tok = load_tokenizer(directory / "llm_tokenizer") if (directory / "llm_tokenizer").is_dir() else None
    released = "vision" in spec or "bridge" in spec
    with torch.device("meta") if released else torch.device("cpu"):
        vision = bridge = None
        if "vision" in spec:
            config_class, model_class = VISION[spec["vision"]["config"]["model_type"]]
            tower = model_class(config_class.from_dict(spec["vision"]["config"]))
            tower.post_layernorm = torch.nn.Identity()  # it lives in the backend, as ln_vision
            vision = PretrainedVisionEncoder(tower, spec["vision"]["image"])
        if "bridge" in spec:
            llm_config = dict(spec["bridge"]["llm"])
            llm_config = AutoConfig.for_model(llm_config.pop("model_type"), **llm_config)
            auto = AutoModelForSeq2SeqLM if llm_config.is_encoder_decoder else AutoModelForCausalLM
            llm = FrozenLLM(auto.from_config(llm_config))
            projector = Projector(spec["bridge"]["video_dim"], llm.embed_dim, kind="linear")
            bridge = VideoLLMBridge(projector=projector, llm=llm, tokenizer=llm_tok, prompt=spec["bridge"]["prompt"],
                                    instruction_aware=spec["bridge"]["instruction_aware"],
                                    max_text_len=spec["bridge"]["max_text_len"])
        model = VideoLanguageModel(config, qtok, llm_tokenizer=llm_tok, vision=vision, bridge=bridge)
    state = load_file(str(file))
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    names = {n for n, _ in named}
    expected = names - set(spec["tied"])
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise KeyError(f"{file}: missing {missing[:10]}, unexpected {unexpected[:10]}")
    with torch.no_grad():
        for name, value in state.items():
            _set(model, name, value)
        loaded = dict([*model.named_parameters(), *model.named_buffers()])
        for alias, name in spec["tied"].items():
            _set(model, alias, loaded[name])
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{directory}: tensors were never loaded: {left[:10]}")
    return model.eval()
