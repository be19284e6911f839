"""Released weights out: ``export_hf(model, DIR)`` writes a folder transformers' ``Blip2ForConditionalGeneration``
/ ``InstructBlip(Video)ForConditionalGeneration.from_pretrained`` load and caption with as we do.

The inverse of ``videoqf.pretrained.hf``: the vision tower (``PretrainedVisionEncoder``) with ``ln_vision`` as its
``post_layernorm``, our head split back into transformers' separate query / key / value tensors, the linear
projector as ``language_projection``, the LLM as it is, and the processor rebuilt from the tower's resize and
normalisation with both tokenizers. Only a model transformers can express exports: an image Q-Former head run per
frame and concatenated (``framewise``; one frame for BLIP-2 / InstructBLIP, four for InstructBLIP-Video), a
linear projector, no audio, a vision tower of transformers' own; anything else is an error saying what.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessor,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipVideoConfig,
    InstructBlipVideoForConditionalGeneration,
    InstructBlipVideoProcessor,
    InstructBlipVideoVideoProcessor,
)

from videoqf.pretrained.vision import PretrainedVisionEncoder
from videoqf.qformer import QFormer
from videoqf.qformer.convert import _layer_sources

# (config class, model class, placeholder token, its config key)
TARGETS = {
    "blip-2": (Blip2Config, Blip2ForConditionalGeneration, "<image>", "image_token_index"),
    "instructblip": (InstructBlipConfig, InstructBlipForConditionalGeneration, "<image>", "image_token_index"),
    "instructblipvideo": (InstructBlipVideoConfig, InstructBlipVideoForConditionalGeneration, "<video>",
                          "video_token_index"),
}


def _check_exportable(model) -> None:
    problems = []
    if not isinstance(model.vision, PretrainedVisionEncoder):
        problems.append("its vision tower is not a transformers BLIP-2 vision model (a timm ViT has no such layout)")
    if model.config.variant != "framewise":
        problems.append(f"its backend is {model.config.variant!r}; transformers runs the image Q-Former per frame "
                        "and concatenates ('framewise')")
    if model.bridge is None or model.bridge.projector.num_tokens is not None or not isinstance(
            model.bridge.projector.net, torch.nn.Linear):
        problems.append("it needs an LLM behind one linear projector (language_projection)")
    if model.llm_head is not None:
        problems.append("the LLM reads a head of its own (model.llm.own_head), which transformers has no place for")
    if problems:
        raise ValueError("cannot export to transformers: " + "; ".join(problems))


def qformer_config_dict(head: QFormer) -> dict:
    c = head.config
    return dict(hidden_size=c.hidden_size, num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                intermediate_size=c.intermediate_size, cross_attention_frequency=c.cross_attention_frequency,
                encoder_hidden_size=c.encoder_width, vocab_size=c.vocab_size, max_position_embeddings=c.max_text_len,
                layer_norm_eps=c.layer_norm_eps, hidden_dropout_prob=c.hidden_dropout,
                attention_probs_dropout_prob=c.attention_dropout)


def hf_qformer_state(head: QFormer, wanted: set[str]) -> dict[str, torch.Tensor]:
    """Our head in transformers' Q-Former layout, restricted to the ``wanted`` keys (which must all be filled:
    InstructBLIP's holds the text embeddings and text FFN, BLIP-2's neither)."""
    own = dict(head.named_parameters())
    norm = "embeddings.layernorm" if "embeddings.layernorm.weight" in wanted else "layernorm"
    table = _layer_sources(head.config, "hf")
    table.update({f"embed_norm.{p}": [f"{norm}.{p}"] for p in ("weight", "bias")})
    if head.text_embeddings is not None:
        table["text_embeddings.word.weight"] = ["embeddings.word_embeddings.weight"]
        table["text_embeddings.position.weight"] = ["embeddings.position_embeddings.weight"]
    out = {}
    for name, sources in table.items():
        for source, chunk in zip(sources, own[name].detach().chunk(len(sources), dim=0)):
            if source in wanted:
                out[source] = chunk.clone()
    missing = sorted(wanted - set(out))
    if missing:
        raise ValueError(f"our head has nothing for transformers' Q-Former keys {missing[:10]}")
    return out


def export_hf(model, directory: str | Path, *, video: bool = False) -> Path:
    """Write ``model`` as a transformers folder (safetensors weights, config, processor) into ``directory``.

    The class: InstructBLIP when the Q-Former reads the instruction (``video=True``: InstructBLIP-Video, which
    takes four frames), else BLIP-2. Returns the folder.
    """
    _check_exportable(model)
    directory = Path(directory)
    instruct = model.bridge.instruction_aware
    if video and not instruct:
        raise ValueError("transformers' video class is InstructBLIP-Video: the model must be instruction-aware")
    kind = "instructblipvideo" if video else "instructblip" if instruct else "blip-2"
    config_class, model_class, placeholder, token_key = TARGETS[kind]
    head, llm, tokenizer = model.backend.head, model.bridge.llm.model, model.bridge.tokenizer
    if placeholder not in tokenizer.get_vocab():
        raise ValueError(f"the LLM tokenizer has no {placeholder} token, where transformers puts the queries")
    config = config_class(vision_config=model.vision.model.config.to_dict(), qformer_config=qformer_config_dict(head),
                          text_config=llm.config.to_dict(), num_query_tokens=head.config.num_queries,
                          **{token_key: tokenizer.convert_tokens_to_ids(placeholder)})
    with torch.device("meta"):
        hf = model_class(config)
    wanted = set(hf.state_dict())
    state = {f"vision_model.{k}": v for k, v in model.vision.model.state_dict().items()}
    state.update({f"vision_model.post_layernorm.{k}": v for k, v in model.backend.ln_vision.state_dict().items()})
    qformer_keys = {k[len("qformer."):] for k in wanted if k.startswith("qformer.")}
    state.update({f"qformer.{k}": v for k, v in hf_qformer_state(head, qformer_keys).items()})
    state["query_tokens"] = head.query_tokens.detach()
    state.update({f"language_projection.{k}": v for k, v in model.bridge.projector.net.state_dict().items()})
    state.update({f"language_model.{k}": v for k, v in llm.state_dict().items()})
    missing, unexpected = sorted(wanted - set(state)), sorted(set(state) - wanted)
    if missing or unexpected:
        raise KeyError(f"export to {model_class.__name__}: missing {missing[:10]}, unexpected {unexpected[:10]}")
    hf.load_state_dict(state, assign=True)
    hf.tie_weights()
    hf.save_pretrained(directory)
    _processor(model, kind).save_pretrained(directory)
    return directory


def _processor(model, kind: str):
    data = model.vision.data_config
    size = data["image_size"]
    height, width = (size, size) if isinstance(size, int) else size
    pixels = dict(size={"height": height, "width": width}, image_mean=list(data["mean"]), image_std=list(data["std"]))
    queries = model.backend.head.config.num_queries
    tokenizer = model.bridge.tokenizer
    if kind == "blip-2":
        return Blip2Processor(BlipImageProcessor(**pixels), tokenizer, num_query_tokens=queries)
    if model.tokenizer is None:
        raise ValueError("InstructBLIP's processor needs the Q-Former tokenizer, and this model has none")
    if kind == "instructblip":
        return InstructBlipProcessor(BlipImageProcessor(**pixels), tokenizer, model.tokenizer, num_query_tokens=queries)
    return InstructBlipVideoProcessor(InstructBlipVideoVideoProcessor(**pixels), tokenizer, model.tokenizer,
                                      num_query_tokens=queries)
