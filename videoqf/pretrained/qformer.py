"""A released checkpoint's Q-Former into the head of a backend, text side included where it has one.

transformers' ``Blip2QFormerModel`` holds the query path and the text FFN but no text embeddings (BLIP-2's
captioning model never reads text in the Q-Former); ``InstructBlipQFormerModel`` adds the word and position
embeddings, with the embedding LayerNorm under ``embeddings.layernorm`` (the instruction enters there);
``Blip2ForImageTextRetrieval`` keeps the word and position embeddings beside its Q-Former, whose ``layernorm``
then normalises text and queries alike (the caller adds them under ``embeddings.*``). None has BERT's LM head. What the checkpoint lacks keeps its fresh init and is returned by name: only the stage-1
objectives read it, never captioning.
"""
from __future__ import annotations

import logging

import torch

from videoqf.qformer import QFormer
from videoqf.qformer.convert import _layer_sources

log = logging.getLogger(__name__)


def _is_text_side(name: str, text_expert: str) -> bool:
    return name.startswith(("text_embeddings.", "lm_head.")) or f".ffn.experts.{text_expert}." in name


def _check_sources(head: QFormer, state: dict, table: dict[str, list[str]], fresh: list[str]) -> None:
    """Every parameter has its source (or is named fresh) and every source key is used."""
    missing = sorted({f"{s} (for {n})" for n, srcs in table.items() for s in srcs if s not in state}
                     | {f"{n} (no source)" for n, _ in head.named_parameters()
                        if n not in table and n not in fresh and n != "query_tokens"})
    if missing:
        raise KeyError(f"transformers Q-Former: {len(missing)} keys have no source: {missing[:20]}")
    unexpected = sorted(set(state) - {s for srcs in table.values() for s in srcs} - {"embeddings.position_ids"})
    if unexpected:
        raise KeyError(f"transformers Q-Former: {len(unexpected)} keys were not used: {unexpected[:20]}")


def load_hf_qformer(head: QFormer, state: dict[str, torch.Tensor], query_tokens: torch.Tensor) -> list[str]:
    """Fill ``head`` (built on the CPU or the meta device) from a transformers Q-Former state dict (keys without
    the ``qformer.`` prefix) and the learned queries [1, Q, H]; returns the head's parameters the checkpoint has
    no source for."""
    config = head.config
    norm = "embeddings.layernorm" if "embeddings.layernorm.weight" in state else "layernorm"
    table = _layer_sources(config, "hf")
    table.update({f"embed_norm.{p}": [f"{norm}.{p}"] for p in ("weight", "bias")})
    if config.text_branch:
        table["text_embeddings.word.weight"] = ["embeddings.word_embeddings.weight"]
        table["text_embeddings.position.weight"] = ["embeddings.position_embeddings.weight"]
    fresh = sorted(n for n, _ in head.named_parameters() if n != "query_tokens" and _is_text_side(n, config.text_expert)
                   and any(s not in state for s in table.get(n, [""])))
    for name in fresh:
        table.pop(name, None)
    _check_sources(head, state, table, fresh)
    values = {name: state[srcs[0]] if len(srcs) == 1 else torch.cat([state[s] for s in srcs])
              for name, srcs in table.items()}
    values["query_tokens"] = query_tokens.reshape(head.query_tokens.shape)
    wrong = [f"{n} {tuple(p.shape)} <- {tuple(values[n].shape)}" for n, p in head.named_parameters()
             if n in values and values[n].shape != p.shape]
    if wrong:
        raise ValueError(f"transformers Q-Former: shapes do not fit: {wrong[:20]}")
    # assign: the head takes the loaded tensors themselves (only fused ones are new), so a big checkpoint is
    # not held twice; the text embeddings are a new tensor then, and BERT's LM head shares it again
    head.load_state_dict({n: v.detach().float() for n, v in values.items()}, strict=False, assign=True)
    for module in head.modules():  # a head built on the meta device: what the checkpoint lacks starts as BERT's
        if any(p.is_meta for p in module.parameters(recurse=False)):
            module.to_empty(device=head.query_tokens.device, recurse=False)
            head._init_weights(module)
    if head.lm_head is not None:
        head.lm_head.decoder.weight = head.text_embeddings.word.weight
    if fresh:
        log.warning("the checkpoint's Q-Former has no %d text-side tensors (%s ...): they keep their fresh init "
                    "and matter to stage-1 training only", len(fresh), ", ".join(fresh[:3]))
    return fresh
