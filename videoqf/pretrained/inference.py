"""What the inference tools read from ``--checkpoint``: a model and the run config its clips are decoded by.

This project's checkpoints carry their run config (``videoqf.recipes.checkpoint_model``). A released folder
(or a LAVIS ``.pth``) carries none, so the clip decoding follows the checkpoint: its processor's image size and normalisation (the
vision tower's ``data_config``), one frame (the middle one) for an image model, InstructBLIP-Video's four
frames for a video one, spread uniformly over the clip; ``num_frames`` sets another count.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from videoqf.data.config import DataConfig
from videoqf.experiment import ExperimentConfig
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.pretrained import load_pretrained
from videoqf.pretrained.hf import hf_model_type

VIDEO_FRAMES = {"instructblipvideo": 4}  # InstructBLIP-Video's processor inserts the queries of four frames


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu", num_frames: int | None = None,
                    **overrides) -> tuple[VideoLanguageModel, ExperimentConfig, Path]:
    """(model in eval mode on ``device``, run config, folder) for any folder ``load_pretrained`` takes;
    ``overrides`` go to it (a released folder's ``dtype``, ``prompt``, ...)."""
    model, cfg, path = _load(Path(path).expanduser(), num_frames, overrides)
    return model.to(device), cfg, path


def _load(path: Path, num_frames: int | None, overrides: dict) -> tuple[VideoLanguageModel, ExperimentConfig, Path]:
    model_type = hf_model_type(path) if path.is_dir() else None
    if model_type is None and path.suffix != ".pth":
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


def add_device_argument(ap: argparse.ArgumentParser) -> None:
    """``--device``: where the model runs (default: the GPU when torch sees one, as training does)."""
    ap.add_argument("--device", type=inference_device, default=inference_device(None),
                    help="cpu, cuda or cuda:N (default: cuda when a GPU is visible, else cpu)")


def inference_device(name: str | None) -> torch.device:
    """``name`` as a device torch can use here; None picks the GPU when one is visible."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{name!r}: expected cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{name!r}: torch sees no CUDA device here (use --device cpu)")
    return device


def add_released_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of a tool's ``--checkpoint`` that only a released folder or a LAVIS ``.pth`` reads."""
    group = ap.add_argument_group("released checkpoints (transformers folders, LAVIS .pth)")
    group.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="vision tower and LLM dtype (default: as "
                       "stored; the Q-Former stays fp32)")
    group.add_argument("--num-frames", type=int, help="frames per clip (default: 1 for an image model, 4 for "
                       "InstructBLIP-Video), spread uniformly")
    group.add_argument("--qformer-tokenizer", help="a bert-base-uncased tokenizer folder, for checkpoints that bring "
                       "none (BLIP-2 captioning folders, LAVIS .pth files whose Q-Former reads text)")
    group.add_argument("--llm", help="a LAVIS .pth's LLM: its local transformers folder (not needed for blip2)")


def released_overrides(args: argparse.Namespace) -> dict:
    """``load_checkpoint`` keywords from the options ``add_released_arguments`` added (the ones given only)."""
    given = {"dtype": args.dtype, "num_frames": args.num_frames, "qformer_tokenizer": args.qformer_tokenizer,
             "llm": args.llm}
    return {k: v for k, v in given.items() if v is not None}
