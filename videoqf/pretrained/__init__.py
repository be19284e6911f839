"""Released weights in: ``load_pretrained(path, **overrides) -> VideoLanguageModel`` for any folder we read.

    transformers Blip2 / InstructBlip / InstructBlipVideo folder  -> ``videoqf.pretrained.hf``
    transformers Blip2ForImageTextRetrieval folder (stage 1)      -> ``videoqf.pretrained.retrieval``
    this project's run, stage or checkpoint folder                -> ``videoqf.recipes.checkpoint_model``
    a folder ``model.save_pretrained`` wrote (``videoqf.yaml``)    -> ``videoqf.pretrained.save``
    a LAVIS ``.pth`` (blip2 / blip2_opt / blip2_t5 / blip2_vicuna_instruct) -> ``videoqf.pretrained.lavis``

Only local paths are read; a path that is none of these is an error that says what was looked for.
``variant=`` / ``num_frames=`` build a video model of any variant from an image checkpoint of these kinds
(``videoqf.pretrained.video``; what it copies: ``videoqf.pretrained.init_from``).
Out: ``export_hf(model, DIR)`` (``videoqf.pretrained.export``) writes a transformers folder back.
"""
from __future__ import annotations

from pathlib import Path

from videoqf.models.video_lm import VideoLanguageModel
from videoqf.pretrained.export import export_hf
from videoqf.pretrained.hf import HF_CLASSES, IMAGE_HEAD_VARIANTS, hf_model_type, load_hf_folder
from videoqf.pretrained.lavis import load_lavis
from videoqf.pretrained.retrieval import is_retrieval_folder, load_retrieval_folder
from videoqf.pretrained.save import is_saved, load_saved, save_pretrained

__all__ = ["load_pretrained", "export_hf", "save_pretrained"]


def load_pretrained(path: str | Path, **overrides) -> VideoLanguageModel:
    """The model a local folder holds, in eval mode.

    transformers folders take ``dtype`` ("bf16" | "fp16" | "fp32"; default as stored), ``variant``
    ("framewise" | "meanpool"), ``qformer_tokenizer`` (folder) and ``prompt`` (a retrieval folder, which feeds
    no LLM, takes no prompt); this project's checkpoints take none (their config says it all); a LAVIS ``.pth``
    takes ``llm`` (its LLM's local folder; none for a stage-1 ``blip2`` file) and ``vision_heads`` besides.
    ``variant`` (any backend) and ``num_frames`` on any of them: the video model built from that image
    checkpoint; its ``init_report`` says what it copied and what is new.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    variant, num_frames = overrides.pop("variant", None), overrides.pop("num_frames", None)
    if variant is not None or num_frames is not None:
        return _video_model(path, variant, num_frames, overrides)
    if path.is_dir() and is_retrieval_folder(path):
        return load_retrieval_folder(path, **overrides)
    if path.is_dir() and hf_model_type(path) is not None:
        return load_hf_folder(path, **overrides)
    if path.suffix == ".pth":
        return load_lavis(path, **overrides)
    if path.is_dir() and is_saved(path):
        if overrides:
            raise TypeError(f"{path}: a saved model takes no overrides, got {sorted(overrides)}")
        return load_saved(path)
    from videoqf.recipes.checkpoint_model import load_model

    if overrides:
        raise TypeError(f"{path}: this project's checkpoints take no overrides, got {sorted(overrides)}")
    try:
        return load_model(path)[0]
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path} is neither a transformers folder of {sorted(HF_CLASSES)} (config.json "
                                f"model_type) nor this project's checkpoint: {err}") from err


def _video_model(path: Path, variant: str | None, num_frames: int | None, overrides: dict) -> VideoLanguageModel:
    if hf_model_type(path) is not None and variant in IMAGE_HEAD_VARIANTS and num_frames is None:
        loader = load_retrieval_folder if is_retrieval_folder(path) else load_hf_folder
        return loader(path, variant=variant, **overrides)  # the released model as it is
    from videoqf.pretrained.video import video_from_image

    source = load_pretrained(path, **overrides)
    model, report = video_from_image(source, variant or source.config.variant, num_frames=num_frames,
                                     source_path=str(path))
    model.init_report = report
    return model
