"""LAVIS checkpoints (``.pth``) of ``blip2`` (stage 1: ITC / ITM / ITG heads, no LLM), ``blip2_opt``, ``blip2_t5`` and
``blip2_vicuna_instruct`` (with the LLM from a local folder), as a ``VideoLanguageModel``.

LAVIS (Li et al., 2023, salesforce/LAVIS ``lavis/models/blip2_models``) saves the EVA ViT-g as
``visual_encoder.*`` (39 of its 40 blocks: LAVIS drops the last, so its last block is the one BLIP-2 reads),
then ``ln_vision``, the Q-Former as ``Qformer.bert.*`` (BERT names, ``attention.self``), ``query_tokens`` and the
projection (``opt_proj`` / ``t5_proj`` / ``llm_proj``); the frozen LLM is not in the file. A stage-1 ``blip2`` file
has no projection but the retrieval heads (``vision_proj``, ``text_proj``, ``itm_head``, ``temp``), the text
embeddings and BERT's LM head (``Qformer.cls.*``, which ITG decodes with). The keys are renamed to transformers'
BLIP-2 layout, as transformers' own conversion does (EVA's q and v biases become one qkv bias with a zero k bias),
and the model is then assembled exactly as from a transformers folder (``videoqf.pretrained.hf.from_hf_model``,
``videoqf.pretrained.retrieval.from_retrieval_model``). Sizes are read from the tensors; the ViT's head count is not in them
(EVA ViT-g: 16), nor the Q-Former's (BERT: width / 64).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2ForImageTextRetrieval,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
)

from videoqf.llm.tokenizer import load_tokenizer
from videoqf.pretrained.hf import from_hf_model, load_qformer_tokenizer, torch_dtype
from videoqf.pretrained.retrieval import from_retrieval_model

PROJECTIONS = ("opt_proj", "t5_proj", "llm_proj")
STAGE1_HEADS = {"vision_proj": "vision_projection", "text_proj": "text_projection", "itm_head": "itm_head"}
# BERT's LM head (``Qformer.cls.predictions.*``) -> ours; its decoder weight is the word embeddings, tied
LM_HEAD = {"transform.dense.": "lm_head.dense.", "transform.LayerNorm.": "lm_head.norm.", "bias": "lm_head.decoder.bias",
           "decoder.bias": None, "decoder.weight": None}
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # LAVIS eval
_BLOCK = re.compile(r"visual_encoder\.blocks\.(\d+)\.(.+)")
_VIT = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv.weight": "self_attn.qkv.weight",
        "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_TOP = {"visual_encoder.cls_token": "vision_model.embeddings.class_embedding",
        "visual_encoder.pos_embed": "vision_model.embeddings.position_embedding",
        "visual_encoder.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual_encoder.patch_embed.proj.bias": "vision_model.embeddings.patch_embedding.bias",
        "ln_vision.weight": "vision_model.post_layernorm.weight", "ln_vision.bias": "vision_model.post_layernorm.bias"}


def read_lavis(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a LAVIS ``.pth`` (its ``model`` entry when it holds a training checkpoint)."""
    if not path.is_file():
        raise FileNotFoundError(f"no LAVIS checkpoint at {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt["model"] if "model" in ckpt and isinstance(ckpt["model"], dict) else ckpt


def is_stage1(state: dict[str, torch.Tensor]) -> bool:
    """A LAVIS ``blip2`` (pre-training) checkpoint: retrieval heads, no LLM projection."""
    return "itm_head.weight" in state


def _lm_head_key(rest: str) -> str | None:
    """Our name of ``Qformer.cls.predictions.<rest>`` (None: a tied copy)."""
    prefix = next(p for p in LM_HEAD if rest == p or (p.endswith(".") and rest.startswith(p)))
    return None if LM_HEAD[prefix] is None else LM_HEAD[prefix] + rest[len(prefix):]


def to_hf_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """LAVIS names -> (transformers' Blip2 / InstructBlip / Blip2ForImageTextRetrieval names, what those classes
    have no place for: the LM head in our ``lm_head.*`` names and ``temp``); a key nobody maps is an error."""
    out, extra, biases, unknown = {}, {}, {}, []
    stage1 = is_stage1(state)
    instruct = "Qformer.bert.embeddings.word_embeddings.weight" in state and not stage1
    for key, value in state.items():
        block = _BLOCK.fullmatch(key)
        if key in _TOP:
            out[_TOP[key]] = value
        elif block and block.group(2) in ("attn.q_bias", "attn.v_bias"):
            biases.setdefault(int(block.group(1)), {})[block.group(2)[5]] = value
        elif block:
            rest = block.group(2)
            prefix = next((p for p in _VIT if rest == p or rest.startswith(p + ".")), None)
            if prefix is None:
                unknown.append(key)
                continue
            out[f"vision_model.encoder.layers.{block.group(1)}.{_VIT[prefix]}{rest[len(prefix):]}"] = value
        elif key == "query_tokens":
            out[key] = value
        elif key.startswith("Qformer.bert."):
            name = key[len("Qformer.bert."):].replace("attention.self.", "attention.attention.")
            if name.startswith("embeddings.LayerNorm."):
                name = name.replace("embeddings.LayerNorm.", "embeddings.layernorm." if instruct else "layernorm.")
            if name == "embeddings.position_ids":
                continue
            # the retrieval class keeps the text embeddings beside its Q-Former
            out[name if stage1 and name.startswith("embeddings.") else f"qformer.{name}"] = value
        elif key.startswith("Qformer.cls.predictions."):
            ours = _lm_head_key(key[len("Qformer.cls.predictions."):])
            if ours is not None:
                extra[ours] = value
        elif key == "temp":
            extra[key] = value
        elif key.split(".")[0] in PROJECTIONS:
            out["language_projection." + key.split(".", 1)[1]] = value
        elif key.split(".")[0] in STAGE1_HEADS:
            out[STAGE1_HEADS[key.split(".")[0]] + "." + key.split(".", 1)[1]] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"LAVIS keys this loader does not know (another model?): {sorted(unknown)[:10]}")
    for i, qv in biases.items():  # EVA has no k bias
        out[f"vision_model.encoder.layers.{i}.self_attn.qkv.bias"] = torch.cat([qv["q"], torch.zeros_like(qv["v"]),
                                                                               qv["v"]])
    return out, extra


def _layers(state: dict, pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := re.fullmatch(pattern, k))})


def configs(state: dict[str, torch.Tensor], *, vision_heads: int, qformer_heads: int | None) -> tuple[dict, dict, int]:
    """(vision config, Q-Former config, image size) from the tensors' shapes."""
    width = state["vision_model.embeddings.class_embedding"].shape[-1]
    patch = state["vision_model.embeddings.patch_embedding.weight"].shape[-1]
    grid = math.isqrt(state["vision_model.embeddings.position_embedding"].shape[1] - 1)
    vision = dict(hidden_size=width, num_hidden_layers=len(_layers(state, r"vision_model\.encoder\.layers\.(\d+)\..*")),
                  num_attention_heads=vision_heads, image_size=grid * patch, patch_size=patch, layer_norm_eps=1e-6,
                  intermediate_size=state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0])
    hidden = state["query_tokens"].shape[-1]
    if qformer_heads is None and hidden % 64:
        raise ValueError(f"a Q-Former {hidden} wide is not BERT's 64 per head: give qformer_heads=")
    cross = _layers(state, r"qformer\.encoder\.layer\.(\d+)\.crossattention\..*")
    qformer = dict(hidden_size=hidden, num_attention_heads=qformer_heads or hidden // 64, encoder_hidden_size=width,
                   num_hidden_layers=len(_layers(state, r"qformer\.encoder\.layer\.(\d+)\..*")),
                   intermediate_size=state["qformer.encoder.layer.0.intermediate_query.dense.weight"].shape[0],
                   cross_attention_frequency=cross[1] - cross[0] if len(cross) > 1 else 1,
                   use_qformer_text_input="qformer.encoder.layer.0.intermediate.dense.weight" in state)
    text = next((p for p in ("qformer.embeddings.", "embeddings.") if p + "word_embeddings.weight" in state), None)
    if text is not None:
        qformer["vocab_size"] = state[text + "word_embeddings.weight"].shape[0]
        qformer["max_position_embeddings"] = state[text + "position_embeddings.weight"].shape[0]
    return vision, qformer, grid * patch


def load_lavis(path: str | Path, *, llm: str | Path | None = None, dtype: str | None = None,
               variant: str = "framewise", qformer_tokenizer: str | Path | None = None, prompt: str = "",
               vision_heads: int = 16, qformer_heads: int | None = None):
    """A ``VideoLanguageModel`` from a LAVIS ``.pth`` and the LLM it was trained with (``llm``: a local
    ``save_pretrained`` folder with its tokenizer; a stage-1 ``blip2`` file has none). ``blip2`` and
    InstructBLIP (``blip2_vicuna_instruct``) need ``qformer_tokenizer`` (a bert-base-uncased folder); dtype /
    variant / prompt as ``load_hf_folder``; vision_heads / qformer_heads: the head counts the tensors do not tell
    (default: EVA ViT-g's 16, and BERT's width / 64)."""
    path = Path(path).expanduser()
    state, extra = to_hf_keys(read_lavis(path))
    stage1 = is_stage1(state)  # the heads keep their names in both layouts
    reads_text = stage1 or "qformer.embeddings.word_embeddings.weight" in state
    if reads_text and qformer_tokenizer is None:
        raise ValueError(f"{path}: its Q-Former reads text (a {'blip2' if stage1 else 'InstructBLIP'} checkpoint): "
                         "give qformer_tokenizer= (a bert-base-uncased folder)")
    if stage1 and llm is not None:
        raise ValueError(f"{path} is a stage-1 blip2 checkpoint, which feeds no LLM: leave llm= out")
    if not stage1 and (llm is None or not (Path(llm).expanduser() / "config.json").is_file()):
        raise FileNotFoundError(f"no LLM at {llm} (a LAVIS checkpoint holds none: give its local folder as llm=)")
    qtok = load_qformer_tokenizer(Path(qformer_tokenizer).expanduser()) if qformer_tokenizer is not None else None
    vision, qformer, image_size = configs(state, vision_heads=vision_heads, qformer_heads=qformer_heads)
    image_config = dict(image_size=image_size, mean=CLIP_MEAN, std=CLIP_STD)
    common = dict(vision_config=vision, qformer_config=qformer, num_query_tokens=state["query_tokens"].shape[1])
    if stage1:
        hf = _assemble_hf(Blip2ForImageTextRetrieval, Blip2Config(**common,
                          image_text_hidden_size=state["vision_projection.weight"].shape[0]), state, dtype, path)
        return from_retrieval_model(hf, image_config=image_config, qformer_tokenizer=qtok, variant=variant,
                                    lm_head={k: v for k, v in extra.items() if k.startswith("lm_head.")},
                                    temperature=extra.get("temp"))
    llm = Path(llm).expanduser()
    auto = AutoModelForSeq2SeqLM if AutoConfig.from_pretrained(llm, local_files_only=True).is_encoder_decoder \
        else AutoModelForCausalLM
    language_model = auto.from_pretrained(llm, local_files_only=True, dtype=torch_dtype(dtype))
    config_class, model_class = ((InstructBlipConfig, InstructBlipForConditionalGeneration) if reads_text
                                 else (Blip2Config, Blip2ForConditionalGeneration))
    hf = _assemble_hf(model_class, config_class(**common, text_config=language_model.config.to_dict()), state,
                      dtype, path, language_model=language_model)
    return from_hf_model(hf, image_config=image_config, llm_tokenizer=load_tokenizer(llm), qformer_tokenizer=qtok,
                         variant=variant, prompt=prompt)


def _assemble_hf(model_class, config, state: dict[str, torch.Tensor], dtype: str | None, path: Path, *,
                 language_model=None):
    """``model_class(config)`` holding ``state``'s tensors (and ``language_model``), built without a random init."""
    with torch.device("meta"):
        hf = model_class(config)
    if language_model is not None:
        hf.language_model = language_model
    wanted = {k for k in hf.state_dict() if not k.startswith("language_model.")}
    missing, unexpected = sorted(wanted - set(state)), sorted(set(state) - wanted)
    if missing or unexpected:
        raise KeyError(f"{path}: missing {missing[:10]}, unexpected {unexpected[:10]}")
    stored = state["vision_model.embeddings.class_embedding"].dtype
    vision_dtype = stored if dtype is None else torch_dtype(dtype)
    hf.load_state_dict({k: v.to(vision_dtype) if k.startswith("vision_model.") else v for k, v in state.items()},
                       strict=False, assign=True)
    return hf
