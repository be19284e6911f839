"""transformers' BLIP-2 / InstructBLIP / InstructBLIP-Video folders as a ``VideoLanguageModel``.

One ``from_pretrained`` of the checkpoint's own class reads the folder (shard by shard onto the meta device,
in the stored dtype or the one asked for, the Q-Former kept in fp32, as transformers does), then its parts
go where this project keeps them:

    vision_model (post_layernorm split off)   -> model.vision (``PretrainedVisionEncoder``), frozen
    post_layernorm                            -> model.backend.ln_vision
    query_tokens + qformer                    -> model.backend.head (our ``QFormer``, text side where present)
    language_projection                       -> model.bridge.projector ("linear")
    language_model (AutoModelFor{CausalLM, Seq2SeqLM} inside the checkpoint class) -> model.bridge.llm
    tokenizer files / qformer_tokenizer/      -> model.bridge.tokenizer / model.tokenizer

An image is a one-frame clip. The backend is ``framewise`` (InstructBLIP-Video: each frame's queries,
concatenated in frame order), which for one frame is exactly BLIP-2; ``meanpool`` is the other backend
whose head is the image Q-Former.
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import torch
from transformers import (
    AutoProcessor,
    Blip2ForConditionalGeneration,
    InstructBlipForConditionalGeneration,
    InstructBlipVideoForConditionalGeneration,
)

from videoqf.llm.bridge import VideoLLMBridge
from videoqf.llm.frozen_lm import FrozenLLM
from videoqf.llm.projector import Projector
from videoqf.llm.tokenizer import load_tokenizer
from videoqf.models.config import ModelConfig
from videoqf.models.video_lm import RetrievalHeads, VideoLanguageModel
from videoqf.pretrained.qformer import load_hf_qformer
from videoqf.pretrained.vision import PretrainedVisionEncoder, split_post_layernorm
from videoqf.qformer.convert import qformer_config_from_hf

HF_CLASSES = {
    "blip-2": Blip2ForConditionalGeneration,
    "instructblip": InstructBlipForConditionalGeneration,
    "instructblipvideo": InstructBlipVideoForConditionalGeneration,
}
IMAGE_HEAD_VARIANTS = ("framewise", "meanpool")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
QFORMER_TOKENIZER = "qformer_tokenizer"
DEC_TOKEN = "[DEC]"  # BLIP-2's decoding BOS, the one token it adds to bert-base-uncased


def hf_model_type(path: Path) -> str | None:
    """The folder's transformers ``model_type`` when it is one of ours to read, else None."""
    file = path / "config.json"
    if not file.is_file():
        return None
    model_type = json.loads(file.read_text()).get("model_type")
    return model_type if model_type in HF_CLASSES else None


def check_weight_files(path: Path) -> None:
    """The folder's safetensors weights are all there (one file, or every shard its index names)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [str(path / s) for s in shards if not (path / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names weight shards that are missing: {missing}")
    elif not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"no weights in {path}: expected {path / 'model.safetensors'} or {index}")


def torch_dtype(name: str | None):
    """"bf16" / "fp16" / "fp32" -> torch dtype; None -> "auto" (the stored dtype)."""
    if name is None:
        return "auto"
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r}: expected one of {sorted(DTYPES)} or None (as stored)")
    return DTYPES[name]


def load_qformer_tokenizer(path: Path):
    """BERT WordPiece for the Q-Former's text, with BLIP-2's [DEC] as its BOS (VTG decodes from it)."""
    tokenizer = load_tokenizer(path)
    if tokenizer.bos_token_id is None:
        tokenizer.add_special_tokens({"bos_token": DEC_TOKEN})
    return tokenizer


def processor_image_config(path: Path) -> dict:
    """The processor's resize and normalisation, which video frames get too."""
    processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
    processor = getattr(processor, "image_processor", None) or processor.video_processor
    size = processor.size
    height, width = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
    return dict(image_size=height if height == width else (height, width),
                mean=tuple(processor.image_mean), std=tuple(processor.image_std))


def load_hf_folder(path: str | Path, *, dtype: str | None = None, variant: str = "framewise",
                   qformer_tokenizer: str | Path | None = None, prompt: str = "") -> VideoLanguageModel:
    """A ``VideoLanguageModel`` (stage 2, eval mode) from a transformers Blip2 / InstructBlip(Video) folder.

    dtype: "bf16" | "fp16" | "fp32" for the vision tower and the LLM (None: as stored); the Q-Former, the
    projector and ln_vision are the trainable side and stay fp32. variant: "framewise" or "meanpool".
    qformer_tokenizer: a BERT tokenizer folder for the Q-Former's text when the checkpoint has none of its
    own (BLIP-2's folders; without one the head has no text side: the model captions but cannot train stage 1).
    prompt: the default prompt of captions asked without one.
    """
    path = Path(path).expanduser()
    model_type = hf_model_type(path)
    if model_type is None:
        raise ValueError(f"{path} is not a transformers folder of {sorted(HF_CLASSES)} (config.json model_type)")
    check_weight_files(path)
    hf = HF_CLASSES[model_type].from_pretrained(str(path), local_files_only=True, dtype=torch_dtype(dtype))
    qtok_dir = Path(qformer_tokenizer).expanduser() if qformer_tokenizer is not None else path / QFORMER_TOKENIZER
    qtok = load_qformer_tokenizer(qtok_dir) if qtok_dir.exists() else None
    if qtok is None and (model_type != "blip-2" or qformer_tokenizer is not None):
        raise FileNotFoundError(f"no Q-Former tokenizer at {qtok_dir}")
    return from_hf_model(hf, image_config=processor_image_config(path), llm_tokenizer=load_tokenizer(path),
                         qformer_tokenizer=qtok, variant=variant, prompt=prompt)


def from_hf_model(hf, *, image_config: dict, llm_tokenizer, qformer_tokenizer, variant: str = "framewise",
                  prompt: str = "") -> VideoLanguageModel:
    """A ``VideoLanguageModel`` made of the parts of ``hf`` (a transformers Blip2 / InstructBlip(Video)
    ForConditionalGeneration, taken apart); instruction-aware when its Q-Former reads text. Its
    ``pretrained_fresh`` names the head's parameters the checkpoint had no source for."""
    if variant not in IMAGE_HEAD_VARIANTS:
        raise ValueError(f"variant={variant!r}: a released image Q-Former is the head of {IMAGE_HEAD_VARIANTS} only")
    qtok = qformer_tokenizer
    # the text side is what the Q-Former's tokenizer feeds: a captioning folder without one loads none
    qconfig = replace(qformer_config_from_hf(hf.config), text_branch=qtok is not None)
    text_config = hf.config.text_config
    llm = FrozenLLM(hf.language_model)
    projector = Projector(qconfig.hidden_size, llm.embed_dim, kind="linear")
    with torch.no_grad():
        projector.net.weight.copy_(hf.language_projection.weight)
        projector.net.bias.copy_(hf.language_projection.bias)
    bridge = VideoLLMBridge(projector=projector, llm=llm, tokenizer=llm_tokenizer, prompt=prompt,
                            instruction_aware=hf.config.model_type != "blip-2",
                            max_text_len=getattr(text_config, "max_position_embeddings", None) or 512)
    config = ModelConfig(variant=variant, backend={"qformer": asdict(qconfig)}, use_audio=False,
                         max_text_len=qconfig.max_text_len)
    model = assemble(hf, config, qformer_state(hf.state_dict()), image_config=image_config, qformer_tokenizer=qtok,
                     bridge=bridge)
    model.retrieval_heads = RetrievalHeads(model.backend.hidden_size, config.objectives)  # no source: fresh
    return check_loaded(model)


def qformer_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A BLIP-2 class's Q-Former tensors, without the ``qformer.`` prefix (as ``load_hf_qformer`` reads them)."""
    return {k[len("qformer."):]: v for k, v in state.items() if k.startswith("qformer.")}


def assemble(hf, config: ModelConfig, qformer_state: dict[str, torch.Tensor], *, image_config: dict,
             qformer_tokenizer, bridge: VideoLLMBridge | None) -> VideoLanguageModel:
    """The parts every BLIP-2 class shares: the vision tower (``post_layernorm`` as the backend's ln_vision) and
    the head Q-Former filled from ``qformer_state`` (transformers' Q-Former names, text embeddings included where
    the checkpoint has them) and ``hf.query_tokens``. The retrieval heads are left on the meta device for the
    caller; ``model.pretrained_fresh`` names the head's parameters the checkpoint had no source for."""
    ln_vision = split_post_layernorm(hf.vision_model)
    vision = PretrainedVisionEncoder(hf.vision_model, image_config)
    with torch.device("meta"):  # the head takes the checkpoint's tensors: a random one first would double its peak
        model = VideoLanguageModel(config, qformer_tokenizer, vision=vision, bridge=bridge)
    model.backend.ln_vision = ln_vision
    model.pretrained_fresh = load_hf_qformer(model.backend.head, qformer_state, hf.query_tokens.detach())
    return model


def check_loaded(model: VideoLanguageModel) -> VideoLanguageModel:
    """``model`` in eval mode, once no parameter or buffer is left on the meta device."""
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"parts of the model were never loaded nor initialised: {left[:10]}")
    return model.eval()
