"""Stage 1 of BLIP-2 for video: VTC, VTM and VTG over a backend's head Q-Former.

Follows BLIP-2 (Li et al., 2023, section 3.2; LAVIS ``blip2_qformer.py``) with the losses kept apart
from the backend (``videoqf.objectives``): the backend maps a video to ``VideoTokens``; this module
runs the head's text branch the three ways the objectives need and adds the weighted losses.

- VTC: the head's query outputs (unimodal) against the text's first token from a text-only pass.
- VTM: hard negatives drawn from the VTC similarities over the global batch; the head re-runs with
  ``[queries; text]`` bi-directionally on the cached cross-attention context of the paired video.
- VTG: the caption, first token replaced by BOS, decodes causally while seeing all queries; the
  queries' keys/values come from the backend's query pass (``VideoTokens.query_cache``) when it has one.

The losses add up by ``ObjectivesConfig.total_loss`` (fixed weights) or, with ``adaptive_weighting``, by
learned uncertainty weights; the optional query-diversity regulariser is added on top (stability kit,
``videoqf.objectives.stability``).

Only the head's query outputs take part (for ``cascaded`` with audio, the audio tokens reach the LLM in
stage 2 but not these losses, as in Video-LLaMA, whose audio branch is trained apart).
"""
from __future__ import annotations

import torch
from torch import nn

from videoqf.backends import VideoBackend, VideoTokens
from videoqf.objectives.config import ObjectivesConfig
from videoqf.objectives.distributed import gather_cat, gather_texts, get_rank, get_world_size
from videoqf.objectives.stability import UncertaintyWeighting, query_diversity
from videoqf.objectives.vtc import VideoTextContrastive, fill_padded_queries
from videoqf.objectives.vtg import decoder_input_ids, video_grounded_generation_loss
from videoqf.objectives.vtm import VideoTextMatching, matching_pairs, sample_hard_negatives
from videoqf.qformer import CrossContext


def gather_context(context: CrossContext) -> CrossContext:
    """Every rank's cross-attention keys/values (with gradient), so VTM can pair across the global batch."""
    if get_world_size() == 1:
        return context
    kv = [(gather_cat(k), gather_cat(v)) for k, v in context.kv]
    mask = None if context.mask is None else gather_cat(context.mask, with_grad=False)
    return CrossContext(kv=kv, mask=mask)


class Stage1Objectives(nn.Module):
    """VTC + VTM + VTG heads (projections, temperature, matching head) and their weighted sum."""

    def __init__(self, hidden_size: int, config: ObjectivesConfig, *, bos_token_id: int):
        super().__init__()
        self.config = config
        self.bos_token_id = bos_token_id
        self.vtc = VideoTextContrastive.from_config(hidden_size, config)
        self.vtm = VideoTextMatching(hidden_size)
        self.uncertainty = (UncertaintyWeighting([n for n, w in config.weights().items() if w > 0])
                            if config.adaptive_weighting else None)

    def text_features(self, backend: VideoBackend, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """[B, L] ids -> [B, D] unit-norm contrastive text embeddings (text-only pass, first token)."""
        cls = backend.head(text_ids=text_ids, text_mask=text_mask).text_output[:, 0]
        return self.vtc.embed_text(cls)

    def video_features(self, vt: VideoTokens) -> torch.Tensor:
        """[B, Q, D] unit-norm contrastive video embeddings (one per head query; a padded query repeats the
        clip's first real one, so a max over queries sees real ones only)."""
        return fill_padded_queries(self.vtc.embed_video(vt.contrastive_tokens), vt.contrastive_mask)

    def matching_scores(self, backend: VideoBackend, context: CrossContext, text_ids: torch.Tensor,
                        text_mask: torch.Tensor) -> torch.Tensor:
        """Probability that each (video, text) row pair matches: [B]."""
        out = backend.head(context=context, text_ids=text_ids, text_mask=text_mask, mode="bidirectional")
        logits = self.vtm.itm_head(out.query_output).mean(dim=1)
        return logits.softmax(-1)[:, 1]

    @torch.no_grad()
    def head_captions(self, backend: VideoBackend, vt: VideoTokens, *, eos_token_id: int, pad_token_id: int,
                      max_new_tokens: int = 40) -> torch.Tensor:
        """Greedy VTG decoding by the head alone (BLIP-2's ITG branch as a captioner): [B, <= max_new_tokens]
        ids after BOS, ``pad_token_id`` once a row has produced ``eos_token_id``. It says how much of the
        caption stage 1 grounds in the video before any LLM is involved."""
        head = backend.head
        batch = vt.tokens.shape[0]
        ids = torch.full((batch, 1), self.bos_token_id, dtype=torch.long, device=vt.tokens.device)
        cache, step_ids = vt.query_cache, ids
        done = torch.zeros(batch, dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            if cache is not None:  # the queries' (and earlier text's) keys/values are reused
                out = head(text_ids=step_ids, mode="causal", past_key_values=cache, use_cache=True)
                cache = out.past_key_values
            else:  # no query cache (an instructed head, framewise, meanpool): rerun the whole prefix
                out = head(context=vt.context, text_ids=ids, mode="causal")
            step_ids = head.lm_logits(out.text_output[:, -1:]).argmax(-1).masked_fill(done[:, None], pad_token_id)
            ids = torch.cat([ids, step_ids], dim=1)
            done |= step_ids[:, 0] == eos_token_id
            if done.all():
                break
        return ids[:, 1:]

    def forward(
        self,
        backend: VideoBackend,
        vt: VideoTokens,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        video_ids: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """vt: the backend's output for B clips; text_ids / text_mask: [B, L] (each rank's L may differ: VTM
        pads them to one before gathering); video_ids: [B] (same id = same video). Returns ``loss`` and each
        part."""
        cfg = self.config
        head = backend.head
        losses: dict[str, torch.Tensor] = {}
        query_output = vt.contrastive_tokens

        text_cls = head(text_ids=text_ids, text_mask=text_mask).text_output[:, 0]
        vtc = self.vtc(query_output, text_cls, video_ids, query_mask=vt.contrastive_mask)
        losses["vtc"] = vtc["loss"]

        if cfg.vtm_weight > 0:
            rank = get_rank()
            negatives = sample_hard_negatives(vtc["sim_t2v"], vtc["sim_v2t"], video_ids, vtc["video_ids_all"],
                                              rank, generator=generator)
            video_idx, text_idx, labels = matching_pairs(negatives, rank)
            context_all = gather_context(vt.context)
            ids_all, mask_all = gather_texts(text_ids, text_mask)
            out = head(context=context_all.select(video_idx), text_ids=ids_all[text_idx],
                       text_mask=mask_all[text_idx], mode="bidirectional")
            vtm = self.vtm(out.query_output, labels)
            losses["vtm"] = vtm["loss"]

        if cfg.vtg_weight > 0:
            dec_ids = decoder_input_ids(text_ids, self.bos_token_id)
            if vt.query_cache is not None:
                out = head(text_ids=dec_ids, text_mask=text_mask, mode="causal", past_key_values=vt.query_cache)
            else:
                out = head(context=vt.context, text_ids=dec_ids, text_mask=text_mask, mode="causal")
            vtg = video_grounded_generation_loss(head.lm_logits(out.text_output), text_ids, text_mask,
                                                 label_smoothing=cfg.vtg_label_smoothing)
            losses["vtg"] = vtg

        logs = dict(losses)
        if self.uncertainty is not None:
            total, weights = self.uncertainty({n: v for n, v in losses.items() if n in self.uncertainty.names})
            logs.update(weights)
        else:
            total = cfg.total_loss(losses)
        if cfg.query_diversity_weight > 0:
            logs["query_diversity"] = query_diversity(query_output)
            total = total + cfg.query_diversity_weight * logs["query_diversity"]
        logs["temperature"] = vtc["temperature"]
        return {"loss": total, "logs": logs}
