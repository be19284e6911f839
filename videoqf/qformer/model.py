"""BLIP-2's Querying Transformer (Li et al., 2023, arXiv:2301.12597), BERT-style.

Learned queries and text share one stack of post-norm layers: self-attention over ``[queries; text]``
under one of three masks (see ``masks.py``), cross-attention to the frozen encoder's tokens for the
query positions only (every ``cross_attention_frequency`` layers), and routed feed-forward experts
(BLIP-2: one FFN for queries, one for text).

Three things differ from LAVIS / transformers, without changing the function computed:
- every cross-attention layer's key/value projection of the encoder tokens is done in one matrix
  product (``encode_context``); the result can be reused by several passes over the same video
  (contrastive, matching, generation), which BLIP-2 recomputes each time;
- for a single pass (``encode_context(..., reuse=False)``, and a direct call with ``encoder_tokens``) the
  projections are folded into the queries instead when that is faster (``folds_cheaper``: a quarter of the
  FLOPs or fewer, e.g. the embedded default's frame Q-Former, 4 heads x 4 queries at width 128, not BLIP-2's
  12 x 32 at 768; see ``modules.attention.attend_folded``), in training too, with a LayerNorm the tokens are
  read through (``ln_vision``) folded in as well, so frozen tokens get no gradient made for them;
- self-attention uses one fused QKV projection.

Notation: B batch, Q queries, L text length, N encoder tokens, W encoder width, H hidden.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import torch
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from videoqf.modules.attention import CrossAttention, FoldedTokens, KeyValue, SelfAttention
from videoqf.modules.ffn import FeedForward, RoutedFFN
from videoqf.qformer.config import QFormerConfig
from videoqf.qformer.masks import encoder_attention_mask, self_attention_mask
from videoqf.qformer.text import LMHead, TextEmbeddings


@dataclass
class CrossContext:
    """Encoder tokens projected to keys/values for every cross-attention layer, or kept as they are.

    kv: one (key, value) pair per cross-attention layer, each [B, h, N, d]; or None, and then each layer folds
    the projections of ``tokens`` into its queries;
    mask: [B, 1, 1, N] or None;
    tokens: [B, N, W] the encoder tokens (``encode_context`` keeps them beside ``kv`` too, so that another
    Q-Former may read them through its own projections), or None;
    time: [B, T, W] a time embedding per frame of ``T`` frames of N / T tokens each (frame-major), which the
    timed query groups (``QFormerConfig.timed_groups``) read added to the tokens, or None;
    time_kv: the keys/values of the tokens with ``time`` added, per cross-attention layer (None with ``kv``);
    affine: (scale [W], shift [W] or None) of a LayerNorm the folded layers apply to ``tokens`` through their
    weights (``tokens`` are then normalised but not yet scaled and shifted), or None.
    """

    kv: list[KeyValue] | None
    mask: torch.Tensor | None
    tokens: torch.Tensor | None = None
    time: torch.Tensor | None = None
    time_kv: list[KeyValue] | None = None
    affine: tuple[torch.Tensor, torch.Tensor | None] | None = None

    @property
    def batch_size(self) -> int:
        return self.kv[0][0].shape[0] if self.kv is not None else self.tokens.shape[0]

    def select(self, index: torch.Tensor) -> "CrossContext":
        """Rows ``index`` of the batch (e.g. the videos paired with hard-negative texts). A projected context's
        selection leaves its tokens behind: the passes read its keys and values, and the rows would be a copy."""
        def pick(t):
            return None if t is None else take_rows(t, index)

        def rows(kv):
            return None if kv is None else [(pick(k), pick(v)) for k, v in kv]

        tokens = pick(self.tokens) if self.kv is None else None
        return CrossContext(kv=rows(self.kv), mask=pick(self.mask), tokens=tokens, time=pick(self.time),
                            time_kv=rows(self.time_kv), affine=self.affine)

    def timed_tokens(self) -> torch.Tensor:
        """[B, N, W] the tokens with each frame's time embedding added."""
        per_frame = self.tokens.shape[1] // self.time.shape[1]
        return self.tokens + self.time.repeat_interleave(per_frame, dim=1)


class _Rows(torch.autograd.Function):
    """``t[index]`` whose backward adds the gradient's rows in index order (``index_add_``), the same sums on every
    run: indexing's scatter-add orders them by thread on the CPU."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.shape = t.shape
        return t[index]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return grad.new_zeros(ctx.shape).index_add_(0, index, grad), None


def take_rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t[index]``, where each stretch of ``index`` that runs through all of t's rows in order (a matching pass's
    positives and its negative texts) is ``t`` itself, concatenated: its backward is then a sum of slices, not an
    add of rows into a zero-filled gradient of the whole of ``t`` (``_Rows``, which takes the other stretches)."""
    rows = t.shape[0]
    if rows == 0 or index.numel() % rows:
        return _Rows.apply(t, index)
    whole = torch.arange(rows, device=index.device)
    chunks = index.view(-1, rows)
    in_order = [torch.equal(chunk, whole) for chunk in chunks]
    if not any(in_order):
        return _Rows.apply(t, index)
    parts = [t if same else _Rows.apply(t, chunk) for chunk, same in zip(chunks, in_order)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


@dataclass
class QFormerCache:
    """Self-attention keys/values of earlier positions, per layer ([B, h, P, d] each).

    ``num_queries`` query positions come first, then ``text_mask.shape[1]`` text positions.
    """

    kv: list[KeyValue]
    num_queries: int
    text_mask: torch.Tensor | None

    @property
    def past_text(self) -> int:
        return 0 if self.text_mask is None else self.text_mask.shape[1]

    def select(self, index: torch.Tensor) -> "QFormerCache":
        return replace(
            self,
            kv=[(k[index], v[index]) for k, v in self.kv],
            text_mask=None if self.text_mask is None else self.text_mask[index],
        )


@dataclass
class QFormerOutput:
    """query_output: [B, Q, H] (None for a text-only pass); text_output: [B, L, H] (None without text);
    past_key_values: a ``QFormerCache`` when ``use_cache`` was set."""

    query_output: torch.Tensor | None
    text_output: torch.Tensor | None
    past_key_values: QFormerCache | None = None


class QFormerLayer(nn.Module):
    def __init__(self, config: QFormerConfig, *, cross_attention: bool):
        super().__init__()
        dims = dict(hidden_size=config.hidden_size, num_heads=config.num_heads, eps=config.layer_norm_eps)
        self.self_attn = SelfAttention(dropout=config.attention_dropout, **dims)
        self.cross_attn = CrossAttention(dropout=config.attention_dropout, **dims) if cross_attention else None
        self.ffn = RoutedFFN(
            query_routes=config.query_routes,
            text_expert=config.text_expert if config.text_branch else None,
            make_expert=partial(
                FeedForward,
                hidden_size=config.hidden_size,
                intermediate_size=config.intermediate_size,
                dropout=config.hidden_dropout,
                eps=config.layer_norm_eps,
            ),
        )

    def forward(
        self,
        x: torch.Tensor,
        num_queries: int,
        self_mask: torch.Tensor | None,
        cross_kv: KeyValue | FoldedTokens | None,
        cross_mask: torch.Tensor | None,
        past: KeyValue | None,
        timed: tuple[slice, KeyValue | FoldedTokens] | None = None,
    ) -> tuple[torch.Tensor, KeyValue]:
        """timed: (query positions, keys/values of the tokens with time) for the timed query groups, or None."""
        x, kv = self.self_attn(x, self_mask, past)
        if self.cross_attn is not None and num_queries:
            queries = x[:, :num_queries]
            if timed is None:
                queries = self.cross_attn(queries, cross_kv, cross_mask)
            else:  # the timed rows read the tokens with time, the others without; every row is attended alone
                rows, timed_kv = timed
                parts = [(queries[:, :rows.start], cross_kv), (queries[:, rows], timed_kv),
                         (queries[:, rows.stop:], cross_kv)]
                queries = torch.cat([self.cross_attn(q, part_kv, cross_mask) for q, part_kv in parts
                                     if q.shape[1]], dim=1)
            x = torch.cat([queries, x[:, num_queries:]], dim=1) if x.shape[1] > num_queries else queries
        return self.ffn(x, num_queries), kv


class QFormer(nn.Module):
    """The Q-Former. ``qformer(encoder_tokens, encoder_mask)`` -> ``QFormerOutput`` (``query_output``
    [B, Q, H]); with ``text_ids`` it runs queries and text together under ``mode``; without encoder
    tokens it runs the text alone (the contrastive text features)."""

    def __init__(self, config: QFormerConfig):
        super().__init__()
        self.config = config
        hidden = config.hidden_size
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_queries, hidden))
        self.embed_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.embed_dropout = nn.Dropout(config.hidden_dropout)
        self.text_embeddings = (
            TextEmbeddings(vocab_size=config.vocab_size, max_len=config.max_text_len, hidden_size=hidden)
            if config.text_branch
            else None
        )
        self.cross_kv = nn.Linear(config.encoder_width, len(config.cross_layers) * 2 * hidden)
        self.layers = nn.ModuleList(
            QFormerLayer(config, cross_attention=config.has_cross_attention(i)) for i in range(config.num_layers)
        )
        self.lm_head = (
            LMHead(hidden_size=hidden, vocab_size=config.vocab_size, eps=config.layer_norm_eps)
            if config.text_branch
            else None
        )
        self.apply(self._init_weights)
        nn.init.normal_(self.query_tokens, std=config.initializer_range)
        if self.lm_head is not None:
            self.lm_head.decoder.weight = self.text_embeddings.word.weight  # BERT ties them

    @classmethod
    def from_hf_blip2(cls, model_or_state_dict, **kwargs) -> "QFormer":
        """Import transformers' Blip2 Q-Former weights (see ``videoqf.qformer.convert.from_hf_blip2``)."""
        from videoqf.qformer.convert import from_hf_blip2

        return from_hf_blip2(model_or_state_dict, **kwargs)

    @classmethod
    def from_bert(cls, path, config: QFormerConfig) -> "QFormer":
        """BLIP-2's initialisation from a local BERT (see ``videoqf.qformer.convert.from_bert``)."""
        from videoqf.qformer.convert import from_bert

        return from_bert(path, config)

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.config.gradient_checkpointing = enable

    @property
    def folds_cheaper(self) -> bool:
        """Whether one pass is faster with the key/value projections folded into the queries: h S rows of W
        per encoder token instead of projecting it to 2 H (see ``videoqf.modules.attention.attend_folded``).
        Folding's per-head matmuls are skinny (inner size d), so it must save 4x the FLOPs to win (docs/decisions.md)."""
        return 4 * self.config.num_heads * self.config.num_queries <= self.config.hidden_size

    def encode_context(self, encoder_tokens: torch.Tensor, encoder_mask: torch.Tensor | None = None, *,
                       reuse: bool = True, time: torch.Tensor | None = None,
                       norm: nn.LayerNorm | None = None) -> CrossContext:
        """encoder_tokens [B, N, W], encoder_mask [B, N] bool -> keys/values for every cross layer.

        reuse=False says the context serves one pass: the tokens are then kept unprojected when folding
        the projections into the queries is cheaper (``folds_cheaper``). time: [B, T, W] a time embedding per
        frame (the N tokens are T frames' in turn), read by the timed query groups only. norm: a LayerNorm
        the tokens are read through (BLIP-2's ``ln_vision``); when the projections fold and the tokens need no
        gradient, its scale and shift fold into them too, so autograd makes no [B, N, W] gradient for the
        tokens, only one for the LayerNorm's two vectors."""
        if encoder_tokens.shape[-1] != self.config.encoder_width:
            raise ValueError(
                f"encoder tokens are {encoder_tokens.shape[-1]} wide but qformer.encoder_width="
                f"{self.config.encoder_width}"
            )
        if time is not None and (not self.config.timed_groups or encoder_tokens.shape[1] % time.shape[1]):
            raise ValueError(f"a time embedding of {time.shape[1]} frames over {encoder_tokens.shape[1]} tokens needs "
                             "timed query groups (qformer.timed_groups) and a whole number of tokens per frame")
        mask = encoder_attention_mask(encoder_mask)
        folds = not reuse and self.folds_cheaper
        if norm is not None:
            if folds and time is None and norm.elementwise_affine and not encoder_tokens.requires_grad:
                tokens = nn.functional.layer_norm(encoder_tokens, norm.normalized_shape, eps=norm.eps)
                return CrossContext(kv=None, mask=mask, tokens=tokens.to(self.cross_kv.weight.dtype),
                                    affine=(norm.weight, norm.bias))
            encoder_tokens = norm(encoder_tokens)
        tokens = encoder_tokens.to(self.cross_kv.weight.dtype)
        time = None if time is None else time.to(tokens.dtype)
        if folds:
            return CrossContext(kv=None, mask=mask, tokens=tokens, time=time)
        kv = self._project(self.cross_kv(tokens))
        time_kv = None
        if time is not None:  # the projection is linear: the tokens' keys/values plus each frame's, no bias
            per_frame = tokens.shape[1] // time.shape[1]
            shifts = self._project(nn.functional.linear(time, self.cross_kv.weight))
            time_kv = [(k + dk.repeat_interleave(per_frame, dim=2), v + dv.repeat_interleave(per_frame, dim=2))
                       for (k, v), (dk, dv) in zip(kv, shifts)]
        return CrossContext(kv=kv, mask=mask, tokens=tokens, time=time, time_kv=time_kv)

    def _project(self, projected: torch.Tensor) -> list[KeyValue]:
        """[B, N, 2 H per cross layer] -> one (key, value) pair [B, h, N, d] per cross layer."""
        # split the last dimension (its backward is one concatenation) into [k_0, v_0, k_1, v_1, ...]
        parts = [rearrange(t, "b n (h d) -> b h n d", h=self.config.num_heads)
                 for t in projected.split(self.config.hidden_size, dim=-1)]
        return list(zip(parts[0::2], parts[1::2]))

    def folded_layers(self, tokens: torch.Tensor, affine=None) -> list[FoldedTokens]:
        """Per cross-attention layer: the tokens with that layer's slices of the joint key/value projection.

        affine: (scale, shift) the tokens are to be read through (``CrossContext.affine``): W (s * x + t) + b is
        (W s) x + (W t + b), and the keys' share of the shift is the same for every token, so softmax drops it."""
        hidden, width = self.config.hidden_size, self.config.encoder_width
        # one unbind into [k_0, v_0, k_1, ...]: its backward is one stack, where selecting slices in turn
        # would zero-fill a full-size gradient per slice
        weights = self.cross_kv.weight.view(-1, hidden, width).unbind(0)
        biases = self.cross_kv.bias.view(-1, hidden).unbind(0)
        layers = zip(weights[0::2], weights[1::2], biases[1::2])
        if affine is None:
            return [FoldedTokens(tokens, k, v, bv) for k, v, bv in layers]
        scale, shift = affine
        return [FoldedTokens(tokens, k * scale, v * scale, bv if shift is None else bv + v @ shift)
                for k, v, bv in layers]

    def forward(
        self,
        encoder_tokens: torch.Tensor | None = None,
        encoder_mask: torch.Tensor | None = None,
        *,
        context: CrossContext | None = None,
        text_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        mode: str = "unimodal",
        query_embeds: torch.Tensor | None = None,
        past_key_values: QFormerCache | None = None,
        use_cache: bool = False,
    ) -> QFormerOutput:
        """Run the Q-Former.

        Args:
            encoder_tokens: [B, N, W] frozen-encoder tokens (or give ``context`` from ``encode_context``).
            encoder_mask: [B, N] bool, True for real tokens.
            text_ids / text_mask: [B, L] token ids and bool mask (True for real tokens).
            mode: "unimodal" (contrastive), "bidirectional" (matching) or "causal" (generation).
            query_embeds: [B, Q, H] used instead of the learned queries.
            past_key_values: cache of queries (and earlier text) from a previous call; then only new
                text is given, in "causal" mode.
        """
        if encoder_tokens is not None:
            if context is not None:
                raise ValueError("give encoder_tokens or context, not both")
            context = self.encode_context(encoder_tokens, encoder_mask, reuse=False)
        if text_ids is not None and self.text_embeddings is None:
            raise ValueError("this Q-Former was built with text_branch=False")
        batch = (
            text_ids.shape[0] if text_ids is not None else context.batch_size if context is not None
            else query_embeds.shape[0] if query_embeds is not None else None
        )
        if batch is None:
            raise ValueError("nothing to run: give encoder tokens, a context or text")
        if text_ids is not None and text_mask is None:
            text_mask = torch.ones_like(text_ids, dtype=torch.bool)

        past_queries = past_text = 0
        if past_key_values is not None:
            if mode != "causal" or text_ids is None:
                raise ValueError("a cache continues generation: give new text_ids with mode='causal'")
            past_queries, past_text = past_key_values.num_queries, past_key_values.past_text
            if past_key_values.text_mask is not None:
                text_mask = torch.cat([past_key_values.text_mask, text_mask.bool()], dim=1)
            queries = None
        elif context is not None or query_embeds is not None:
            queries = self.query_tokens.expand(batch, -1, -1) if query_embeds is None else query_embeds
            if context is None and self.config.cross_layers:
                raise ValueError("the query positions cross-attend: give encoder_tokens or a context")
        else:
            queries = None
        num_queries = 0 if queries is None else queries.shape[1]

        parts = [] if queries is None else [queries]
        if text_ids is not None:
            parts.append(self.text_embeddings(text_ids, offset=past_text))
        x = self.embed_dropout(self.embed_norm(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]))

        self_mask = self_attention_mask(
            mode,
            num_queries=num_queries,
            text_mask=text_mask,
            batch_size=batch,
            device=x.device,
            past_queries=past_queries,
            past_text=past_text,
        )
        cross_kv = time_kv = None
        timed = self.config.timed_queries
        if context is not None:
            cross_kv = iter(context.kv if context.kv is not None
                            else self.folded_layers(context.tokens, context.affine))
            if context.time is not None and timed is not None and num_queries:
                if num_queries != self.config.num_queries:
                    raise ValueError(f"the timed query groups are positions {timed.start}..{timed.stop - 1} of "
                                     f"{self.config.num_queries} queries, but {num_queries} were given")
                time_kv = iter(context.time_kv if context.time_kv is not None
                               else self.folded_layers(context.timed_tokens()))
        cross_mask = context.mask if context is not None else None
        new_cache = []
        for i, layer in enumerate(self.layers):
            kv_i = next(cross_kv) if layer.cross_attn is not None and cross_kv is not None else None
            timed_i = (timed, next(time_kv)) if layer.cross_attn is not None and time_kv is not None else None
            past_i = past_key_values.kv[i] if past_key_values is not None else None
            args = (x, num_queries, self_mask, kv_i, cross_mask, past_i, timed_i)
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, kv = checkpoint(layer, *args, use_reentrant=False)
            else:
                x, kv = layer(*args)
            if use_cache:
                new_cache.append(kv)

        cache = None
        if use_cache:
            if mode == "bidirectional" and text_ids is not None and num_queries:
                raise ValueError("queries that saw the text cannot seed a causal cache; use mode='causal'")
            cache = QFormerCache(kv=new_cache, num_queries=num_queries or past_queries, text_mask=text_mask)
        return QFormerOutput(
            query_output=x[:, :num_queries] if num_queries else None,
            text_output=x[:, num_queries:] if text_ids is not None else None,
            past_key_values=cache,
        )

    def lm_logits(self, text_output: torch.Tensor) -> torch.Tensor:
        """text_output [B, L, H] -> next-token logits [B, L, V]."""
        if self.lm_head is None:
            raise ValueError("this Q-Former was built with text_branch=False (no LM head)")
        return self.lm_head(text_output)

    def num_parameters(self, part: str = "all") -> int:
        """Parameter count of ``part``: "all", "query_path" (what transformers' Blip2QFormerModel holds:
        embedding LayerNorm, attention, cross-attention, query experts; no learned queries),
        "queries" or "text_branch" (text embeddings, text expert when not shared, LM head)."""
        text_names = {"text_embeddings", "lm_head"}
        query_experts = {name for name, _ in self.config.query_routes}

        def is_text(name: str) -> bool:
            if name.split(".")[0] in text_names:
                return True
            if ".ffn.experts." in name:
                return name.split(".ffn.experts.")[1].split(".")[0] not in query_experts
            return False

        counts = {"all": 0, "query_path": 0, "queries": 0, "text_branch": 0}
        for name, p in self.named_parameters():  # tied weights are listed once
            counts["all"] += p.numel()
            if name == "query_tokens":
                counts["queries"] += p.numel()
            elif is_text(name):
                counts["text_branch"] += p.numel()
            else:
                counts["query_path"] += p.numel()
        if part not in counts:
            raise ValueError(f"unknown part {part!r}; expected one of {sorted(counts)}")
        return counts[part]
