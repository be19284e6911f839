"""BLIP-2's stage-1 model (transformers' ``Blip2ForImageTextRetrieval``) as a ``VideoLanguageModel`` without an LLM.

Its parts go where the stage-1 objectives and retrieval read them:

    vision_model (post_layernorm split off)       -> model.vision, model.backend.ln_vision
    query_tokens + qformer + embeddings (text)     -> model.backend.head, text side included
    vision_projection / text_projection            -> model.retrieval_heads.vtc.video_proj / text_proj
    itm_head                                       -> model.retrieval_heads.vtm.itm_head
    tokenizer files (bert-base-uncased's)          -> model.tokenizer, with BLIP-2's [DEC] as BOS

transformers keeps no temperature (its ITC scores are raw cosines; ranking does not need one) and no LM head
(ITG): both start fresh unless the caller has them (a LAVIS ``blip2`` checkpoint's ``temp`` and
``Qformer.cls.*``, ``videoqf.pretrained.lavis``).
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import torch
from transformers import Blip2ForImageTextRetrieval

from videoqf.models.config import ModelConfig
from videoqf.models.video_lm import RetrievalHeads, VideoLanguageModel
from videoqf.objectives.config import ObjectivesConfig
from videoqf.pretrained.hf import (
    IMAGE_HEAD_VARIANTS,
    assemble,
    check_loaded,
    check_weight_files,
    load_qformer_tokenizer,
    processor_image_config,
    qformer_state,
    torch_dtype,
)
from videoqf.qformer.convert import qformer_config_from_hf

RETRIEVAL_CLASS = "Blip2ForImageTextRetrieval"
HEADS = {"vtc.video_proj": "vision_projection", "vtc.text_proj": "text_projection", "vtm.itm_head": "itm_head"}


def is_retrieval_folder(path: Path) -> bool:
    """The folder holds transformers' BLIP-2 stage-1 (image-text retrieval) model."""
    file = path / "config.json"
    return file.is_file() and RETRIEVAL_CLASS in (json.loads(file.read_text()).get("architectures") or [])


def load_retrieval_folder(path: str | Path, *, dtype: str | None = None, variant: str = "framewise",
                          qformer_tokenizer: str | Path | None = None) -> VideoLanguageModel:
    """A stage-1 ``VideoLanguageModel`` (no LLM, eval mode) from a ``Blip2ForImageTextRetrieval`` folder; its
    tokenizer is the Q-Former's unless ``qformer_tokenizer`` names another folder. dtype / variant as
    ``load_hf_folder``."""
    path = Path(path).expanduser()
    check_weight_files(path)
    hf = Blip2ForImageTextRetrieval.from_pretrained(str(path), local_files_only=True, dtype=torch_dtype(dtype))
    qtok = load_qformer_tokenizer(Path(qformer_tokenizer).expanduser() if qformer_tokenizer is not None else path)
    return from_retrieval_model(hf, image_config=processor_image_config(path), qformer_tokenizer=qtok,
                                variant=variant)


def from_retrieval_model(hf, *, image_config: dict, qformer_tokenizer, variant: str = "framewise",
                         lm_head: dict[str, torch.Tensor] | None = None,
                         temperature: torch.Tensor | None = None) -> VideoLanguageModel:
    """A ``VideoLanguageModel`` made of the parts of ``hf`` (a ``Blip2ForImageTextRetrieval``); ``lm_head`` (our
    ``lm_head.*`` names) and ``temperature`` fill what transformers' class has no place for."""
    if variant not in IMAGE_HEAD_VARIANTS:
        raise ValueError(f"variant={variant!r}: a released image Q-Former is the head of {IMAGE_HEAD_VARIANTS} only")
    qconfig = replace(qformer_config_from_hf(hf.config), text_branch=True)
    config = ModelConfig(variant=variant, backend={"qformer": asdict(qconfig)}, use_audio=False,
                         max_text_len=qconfig.max_text_len,
                         objectives=ObjectivesConfig(embed_dim=hf.config.image_text_hidden_size))
    state = hf.state_dict()
    text = {k: v for k, v in state.items() if k.startswith("embeddings.")}  # beside the Q-Former in this class
    model = assemble(hf, config, {**qformer_state(state), **text}, image_config=image_config,
                     qformer_tokenizer=qformer_tokenizer, bridge=None)
    heads = RetrievalHeads(model.backend.hidden_size, config.objectives)
    with torch.no_grad():
        for ours, theirs in HEADS.items():
            heads.get_submodule(ours).load_state_dict(getattr(hf, theirs).float().state_dict())
        if temperature is not None:
            heads.vtc.temperature.copy_(temperature.reshape(heads.vtc.temperature.shape))
    model.retrieval_heads = heads
    if lm_head is not None:
        model.backend.head.load_state_dict({k: v.float() for k, v in lm_head.items()}, strict=False)
        model.pretrained_fresh = [n for n in model.pretrained_fresh if n not in lm_head]
    return check_loaded(model)
