"""Importers and exporters of Q-Former weights: transformers' Blip2, LAVIS checkpoints, and BERT.

Every importer is strict: a parameter of ours without a source, a source key nobody uses, or a shape
that does not fit is an error that lists the keys; nothing is silently left at its random init.

Name layouts (layer i):
- LAVIS (``Qformer.bert.`` prefix): ``encoder.layer.i.attention.self.{query,key,value}``,
  ``...crossattention.self.*``, ``intermediate_query`` / ``output_query`` (query FFN),
  ``intermediate`` / ``output`` (text FFN), ``embeddings.*``, and ``Qformer.cls.predictions.*``.
- transformers (``Blip2QFormerModel``): the same with ``attention.attention`` instead of
  ``attention.self`` and ``layernorm`` instead of ``embeddings.LayerNorm``; no text embeddings.
Ours fuses Q/K/V (self-attention) and all layers' cross-attention K/V (see ``model.py``), so one of our
tensors may gather several external ones, concatenated along the output dimension.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from videoqf.qformer.config import QFormerConfig
from videoqf.qformer.model import QFormer

_TEXT_FFN = re.compile(r"encoder\.layer\.\d+\.(intermediate|output)\.(dense|LayerNorm)\.(weight|bias)")


def _layer_index(key: str) -> int:
    match = re.match(r"encoder\.layer\.(\d+)\.", key)
    return int(match.group(1)) if match else -1


# External names of one of our parameters: a list of (external name, rows it fills), in row order.
Sources = list[str]


def _layer_sources(config: QFormerConfig, flavour: str) -> dict[str, Sources]:
    """Our layer parameter name -> external names, for ``flavour`` in {"lavis", "hf", "bert"}."""
    attn = "attention.attention" if flavour == "hf" else "attention.self"
    cross = "crossattention.attention" if flavour == "hf" else "crossattention.self"
    table: dict[str, Sources] = {}
    cross_rows: dict[str, Sources] = {"weight": [], "bias": []}
    for i in range(config.num_layers):
        ext, ours = f"encoder.layer.{i}.", f"layers.{i}."
        for p in ("weight", "bias"):
            table[f"{ours}self_attn.qkv.{p}"] = [f"{ext}{attn}.{n}.{p}" for n in ("query", "key", "value")]
            table[f"{ours}self_attn.out.dense.{p}"] = [f"{ext}attention.output.dense.{p}"]
            table[f"{ours}self_attn.out.norm.{p}"] = [f"{ext}attention.output.LayerNorm.{p}"]
            if config.has_cross_attention(i) and flavour != "bert":  # BERT has no cross-attention
                table[f"{ours}cross_attn.q.{p}"] = [f"{ext}{cross}.query.{p}"]
                table[f"{ours}cross_attn.out.dense.{p}"] = [f"{ext}crossattention.output.dense.{p}"]
                table[f"{ours}cross_attn.out.norm.{p}"] = [f"{ext}crossattention.output.LayerNorm.{p}"]
                cross_rows[p] += [f"{ext}{cross}.key.{p}", f"{ext}{cross}.value.{p}"]
            for expert, (inter, out) in _expert_sources(config, flavour).items():
                e = f"{ours}ffn.experts.{expert}."
                table[f"{e}up.{p}"] = [f"{ext}{inter}.dense.{p}"]
                table[f"{e}down.dense.{p}"] = [f"{ext}{out}.dense.{p}"]
                table[f"{e}down.norm.{p}"] = [f"{ext}{out}.LayerNorm.{p}"]
    if flavour != "bert":
        for p in ("weight", "bias"):
            table[f"cross_kv.{p}"] = cross_rows[p]
    return table


def _expert_sources(config: QFormerConfig, flavour: str) -> dict[str, tuple[str, str]]:
    """Which BLIP-2 FFN initialises each expert: the text expert takes the text FFN; query experts take
    the query FFN (BERT has one FFN, which BLIP-2 copies into the query FFN)."""
    query_ffn = ("intermediate", "output") if flavour == "bert" else ("intermediate_query", "output_query")
    sources = {name: query_ffn for name, _ in config.query_routes}
    if config.text_branch:
        sources[config.text_expert] = ("intermediate", "output")
    return sources


def _sources(config: QFormerConfig, flavour: str) -> dict[str, Sources]:
    table = _layer_sources(config, flavour)
    if flavour == "hf":
        table["embed_norm.weight"], table["embed_norm.bias"] = ["layernorm.weight"], ["layernorm.bias"]
        return table
    for p in ("weight", "bias"):
        table[f"embed_norm.{p}"] = [f"embeddings.LayerNorm.{p}"]
    if config.text_branch:
        table["text_embeddings.word.weight"] = ["embeddings.word_embeddings.weight"]
        table["text_embeddings.position.weight"] = ["embeddings.position_embeddings.weight"]
    return table


def _load(qformer: QFormer, state: dict[str, torch.Tensor], table: dict[str, Sources], *, what: str,
          allow_missing: frozenset[str] = frozenset(), ignore: frozenset[str] = frozenset()) -> None:
    """Fill ``qformer`` from ``state`` following ``table``; every name must be used exactly once."""
    own = dict(qformer.named_parameters())
    missing = sorted({f"{s} (for {n})" for n, srcs in table.items() for s in srcs if s not in state}
                     | {f"{n} (no source)" for n in set(own) - set(table) - allow_missing})
    if missing:
        raise KeyError(f"{what}: {len(missing)} keys have no source: {missing[:20]}")
    used = {s for srcs in table.values() for s in srcs}
    unexpected = sorted(set(state) - used - ignore)
    if unexpected:
        raise KeyError(f"{what}: {len(unexpected)} keys were not used: {unexpected[:20]}")
    wrong = []
    with torch.no_grad():
        for name, srcs in table.items():
            parts = [state[s] for s in srcs]
            if len({p.shape[1:] for p in parts}) > 1:
                wrong.append(f"{name} <- {srcs} {[tuple(p.shape) for p in parts]}")
                continue
            value = torch.cat(parts, dim=0)
            if value.shape != own[name].shape:
                wrong.append(f"{name} {tuple(own[name].shape)} <- {srcs} {tuple(value.shape)}")
                continue
            own[name].copy_(value)
    if wrong:
        raise ValueError(f"{what}: shapes do not fit: {wrong[:20]}")


def from_hf_blip2(model_or_state_dict, *, query_tokens: torch.Tensor | None = None,
                  config: QFormerConfig | None = None) -> QFormer:
    """Build a ``QFormer`` (query path, no text branch) from transformers' Blip2 weights.

    Accepts ``Blip2Model`` / ``Blip2ForConditionalGeneration`` (``query_tokens`` + ``qformer.*``), a
    bare ``Blip2QFormerModel`` (then pass ``query_tokens`` [1, Q, H]), or their state dicts (then pass
    ``config``).
    """
    state = model_or_state_dict
    if isinstance(model_or_state_dict, torch.nn.Module):
        state = model_or_state_dict.state_dict()
        if config is None:
            config = qformer_config_from_hf(model_or_state_dict.config)
    if config is None:
        raise ValueError("from_hf_blip2 needs `config` when given a state dict")
    prefix = "qformer." if any(k.startswith("qformer.") for k in state) else ""
    if query_tokens is None:
        if "query_tokens" not in state:
            raise KeyError("no 'query_tokens' in the Blip2 weights: pass query_tokens= for a bare Blip2QFormerModel")
        query_tokens = state["query_tokens"]
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    text_ffn = "encoder.layer.0.intermediate.dense.weight" in sub
    config = QFormerConfig(**{**vars(config), "text_branch": False, "num_queries": query_tokens.shape[-2]})
    qformer = QFormer(config)
    # transformers keeps no text embeddings beside the Q-Former, so its text FFN cannot be used alone.
    ignore = frozenset(k for k in sub if _TEXT_FFN.fullmatch(k)) if text_ffn else frozenset()
    _load(qformer, sub, _sources(config, "hf"), what="Blip2 Q-Former", allow_missing=frozenset({"query_tokens"}),
          ignore=ignore)
    with torch.no_grad():
        qformer.query_tokens.copy_(query_tokens.reshape(qformer.query_tokens.shape))
    return qformer


def qformer_config_from_hf(hf_config) -> QFormerConfig:
    """A ``QFormerConfig`` from a transformers ``Blip2Config`` or ``Blip2QFormerConfig``."""
    num_queries = getattr(hf_config, "num_query_tokens", None)
    q = getattr(hf_config, "qformer_config", hf_config)
    return QFormerConfig(
        hidden_size=q.hidden_size,
        num_layers=q.num_hidden_layers,
        num_heads=q.num_attention_heads,
        intermediate_size=q.intermediate_size,
        cross_attention_frequency=q.cross_attention_frequency,
        encoder_width=q.encoder_hidden_size,
        num_queries=num_queries if num_queries is not None else QFormerConfig.num_queries,
        vocab_size=q.vocab_size,
        max_text_len=q.max_position_embeddings,
        layer_norm_eps=q.layer_norm_eps,
        hidden_dropout=q.hidden_dropout_prob,
        attention_dropout=q.attention_probs_dropout_prob,
        text_branch=False,
    )


_LAVIS_Q = "Qformer.bert."
_LAVIS_HEAD = {
    "lm_head.dense.weight": "Qformer.cls.predictions.transform.dense.weight",
    "lm_head.dense.bias": "Qformer.cls.predictions.transform.dense.bias",
    "lm_head.norm.weight": "Qformer.cls.predictions.transform.LayerNorm.weight",
    "lm_head.norm.bias": "Qformer.cls.predictions.transform.LayerNorm.bias",
    "lm_head.decoder.bias": "Qformer.cls.predictions.bias",
}
# Copies of tied tensors and buffers that LAVIS state dicts carry beside the parameters.
_LAVIS_ALIASES = {
    "Qformer.cls.predictions.decoder.weight": f"{_LAVIS_Q}embeddings.word_embeddings.weight",
    "Qformer.cls.predictions.decoder.bias": "Qformer.cls.predictions.bias",
}
_LAVIS_BUFFERS = frozenset({f"{_LAVIS_Q}embeddings.position_ids"})


def _lavis_table(config: QFormerConfig) -> dict[str, Sources]:
    table = {ours: [_LAVIS_Q + ext for ext in srcs] for ours, srcs in _sources(config, "lavis").items()}
    table["query_tokens"] = ["query_tokens"]
    if config.text_branch:
        table.update({ours: [ext] for ours, ext in _LAVIS_HEAD.items()})
    return table


def load_lavis_state_dict(qformer: QFormer, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Load a LAVIS BLIP-2 checkpoint's Q-Former (with text embeddings and LM head) into ``qformer``.

    Returns the entries that belong to the rest of the model (``vision_proj``, ``text_proj``,
    ``itm_head``, ``temp``, ``ln_vision``, the visual encoder, ...) so the caller can load them.
    """
    mine = {k: v for k, v in state_dict.items() if k == "query_tokens" or k.startswith("Qformer.")}
    rest = {k: v for k, v in state_dict.items() if k not in mine}
    for alias, canonical in _LAVIS_ALIASES.items():
        if alias in mine and canonical in mine and not torch.equal(mine[alias], mine[canonical]):
            raise ValueError(f"LAVIS checkpoint: {alias} differs from {canonical}, but they are tied")
    _load(qformer, mine, _lavis_table(qformer.config), what="LAVIS Q-Former",
          ignore=frozenset(_LAVIS_ALIASES) | _LAVIS_BUFFERS)
    return rest


def to_lavis_state_dict(qformer: QFormer) -> dict[str, torch.Tensor]:
    """Our Q-Former in LAVIS's key layout (tied copies included, as LAVIS saves them)."""
    own = dict(qformer.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for name, srcs in _lavis_table(qformer.config).items():
        for src, chunk in zip(srcs, own[name].detach().chunk(len(srcs), dim=0)):
            out[src] = chunk.clone()
    if qformer.config.text_branch:
        for alias, canonical in _LAVIS_ALIASES.items():
            out[alias] = out[canonical].clone()
    return out


def from_bert(path: str | Path, config: QFormerConfig) -> QFormer:
    """Initialise a ``QFormer`` from a local BERT checkpoint the way BLIP-2 does.

    Self-attention, embeddings and the text FFN come from BERT; every query expert is a copy of BERT's
    FFN; cross-attention, the learned queries and the LM head transform stay at their fresh init (BERT
    has none of them; its MLM head is not loaded). ``path``: a ``model.safetensors`` file or a directory
    holding one. The word embeddings must match ``config.vocab_size`` rows or fewer (extra rows, e.g.
    BLIP-2's [DEC] token, keep their fresh init).
    """
    from safetensors.torch import load_file

    path = Path(path)
    file = path / "model.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no BERT weights at {file}")
    state = load_file(str(file))
    prefix = "bert." if any(k.startswith("bert.") for k in state) else ""
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    qformer = QFormer(config)
    table = _sources(config, "bert")
    fresh = {n for n in dict(qformer.named_parameters()) if n.startswith(("lm_head.", "cross_kv.", "query_tokens"))
             or ".cross_attn." in n}
    word = state.get("embeddings.word_embeddings.weight")
    if config.text_branch and word is not None and word.shape[0] != config.vocab_size:
        if word.shape[0] > config.vocab_size:
            raise ValueError(f"BERT at {file} has {word.shape[0]} word embeddings, more than vocab_size={config.vocab_size}")
        del table["text_embeddings.word.weight"]
        fresh.add("text_embeddings.word.weight")
        with torch.no_grad():
            qformer.text_embeddings.word.weight[: word.shape[0]].copy_(word)
    if config.text_branch and state.get("embeddings.position_embeddings.weight") is not None:
        pos = state["embeddings.position_embeddings.weight"]
        if pos.shape[0] != config.max_text_len:
            raise ValueError(f"BERT at {file} has {pos.shape[0]} positions, config.max_text_len={config.max_text_len}")
    used = {s for srcs in table.values() for s in srcs}
    # BERT parts BLIP-2 does not use: pooler, token types, layers past num_layers, text parts we replaced.
    ignore = frozenset(k for k in state if k not in used and (
        k.startswith(("pooler.", "embeddings.")) or _layer_index(k) >= config.num_layers))
    _load(qformer, state, table, what=f"BERT {file}", allow_missing=frozenset(fresh), ignore=ignore)
    return qformer
