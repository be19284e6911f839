"""A released checkpoint's Q-Former into the head of a backend, text side included where it has one.

transformers' ``Blip2QFormerModel`` holds the query path and the text FFN but no text embeddings (BLIP-2's
captioning model never reads text in the Q-Former); ``InstructBlipQFormerModel`` adds the word and position
embeddings, with the embedding LayerNorm under ``embeddings.layernorm`` (the instruction enters there). Neither
has BERT's LM head. What the checkpoint lacks keeps its fresh init and is returned by name: only the stage-1
objectives read it, never captioning.
"""
from __future__ import annotations

import logging

import torch

from videoqf.qformer import QFormer
from videoqf.qformer.convert import _layer_sources, _load

log = logging.getLogger(__name__)


def _is_text_side(name: str, text_expert: str) -> bool:
    return name.startswith(("text_embeddings.", "lm_head.")) or f".ffn.experts.{text_expert}." in name


def load_hf_qformer(head: QFormer, state: dict[str, torch.Tensor], query_tokens: torch.Tensor) -> list[str]:
    """Fill ``head`` from a transformers Q-Former state dict (keys without the ``qformer.`` prefix) and the
    learned queries [1, Q, H]; returns the head's parameters the checkpoint has no source for."""
    config = head.config
    instruct = "embeddings.word_embeddings.weight" in state
    norm = "embeddings.layernorm" if instruct else "layernorm"
    table = _layer_sources(config, "hf")
    table.update({f"embed_norm.{p}": [f"{norm}.{p}"] for p in ("weight", "bias")})
    if config.text_branch:
        table["text_embeddings.word.weight"] = ["embeddings.word_embeddings.weight"]
        table["text_embeddings.position.weight"] = ["embeddings.position_embeddings.weight"]
    fresh = sorted(n for n, _ in head.named_parameters() if n != "query_tokens" and _is_text_side(n, config.text_expert)
                   and any(s not in state for s in table.get(n, [""])))
    for name in fresh:
        table.pop(name, None)
    _load(head, state, table, what="transformers Q-Former", allow_missing=frozenset(fresh) | {"query_tokens"},
          ignore=frozenset({"embeddings.position_ids"}))
    if query_tokens.shape[-2:] != head.query_tokens.shape[-2:]:
        raise ValueError(f"query_tokens {tuple(query_tokens.shape)} do not fit the head's {tuple(head.query_tokens.shape)}")
    with torch.no_grad():
        head.query_tokens.copy_(query_tokens.reshape(head.query_tokens.shape))
    if fresh:
        log.warning("the checkpoint's Q-Former has no %d text-side tensors (%s ...): they keep their fresh init "
                    "and matter to stage-1 training only", len(fresh), ", ".join(fresh[:3]))
    return fresh
