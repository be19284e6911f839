"""Stage 1 of BLIP-2 for video: VTC, VTM and VTG on the head Q-Former's text branch.

Follows BLIP-2 (Li et al., 2023, section 3.2; LAVIS ``blip2_qformer.py``), with the loss apart from the model:
it reads the model's public passes (``encode``, ``head_text_cls``, ``head_match_output``,
``head_generation_logits``) and its retrieval heads, and owns only what is the loss's own (the learned loss
weights of the stability kit).

- VTC: the head's query outputs (unimodal) against the text's first token from a text-only pass.
- VTM: hard negatives drawn from the VTC similarities over the global batch; the head re-runs with
  ``[queries; text]`` bi-directionally on the cached cross-attention context of the paired video.
- VTG: the caption, first token replaced by BOS, decodes causally while seeing all queries.

The losses add up by ``ObjectivesConfig.total_loss`` (fixed weights) or, with ``adaptive_weighting``, by
learned uncertainty factors on those weights; the optional query-diversity regulariser is added on top
(``videoqf.objectives.stability``). Only the head's query outputs take part: for ``cascaded`` with audio, the
audio tokens reach the LLM in the caption stage but not these losses, as in Video-LLaMA, whose audio branch
is trained apart; so the audio branch is not run here.
"""
from __future__ import annotations

import torch
from torch import nn

from videoqf.objectives.config import ObjectivesConfig
from videoqf.objectives.distributed import gather_context, gather_texts, get_rank
from videoqf.objectives.stability import UncertaintyWeighting, query_diversity
from videoqf.objectives.vtg import decoder_input_ids, video_grounded_generation_loss
from videoqf.objectives.vtm import matching_pairs, sample_hard_negatives


class Stage1Loss(nn.Module):
    """VTC + VTM + VTG and their weighted sum; ``forward(model, batch)`` -> ``{"loss", "logs", "query_output"}``.

    batch: ``text_ids`` / ``text_mask`` [B, L] (each rank's L may differ: VTM pads them to one before
    gathering) and ``video_id`` [B] (same id = same video), beside the media the model encodes.
    """

    def __init__(self, config: ObjectivesConfig):
        super().__init__()
        self.config = config
        self.uncertainty = UncertaintyWeighting(config.weights()) if config.adaptive_weighting else None

    def forward(self, model, batch: dict, *, generator: torch.Generator | None = None) -> dict:
        cfg = self.config
        text_ids, text_mask, video_ids = batch["text_ids"], batch["text_mask"], batch["video_id"]
        vt = model.encode(batch, audio=False)
        heads = model.retrieval_heads
        query_output = vt.contrastive_tokens
        losses: dict[str, torch.Tensor] = {}

        vtc = heads.vtc(query_output, model.head_text_cls(text_ids, text_mask), video_ids,
                        query_mask=vt.contrastive_mask)
        losses["vtc"] = vtc["loss"]

        if cfg.vtm_weight > 0:
            rank = get_rank()
            negatives = sample_hard_negatives(vtc["sim_t2v"], vtc["sim_v2t"], video_ids, vtc["video_ids_all"],
                                              rank, generator=generator)
            video_idx, text_idx, labels = matching_pairs(negatives, rank)
            context_all = gather_context(vt.context)
            ids_all, mask_all = gather_texts(text_ids, text_mask)
            out = model.head_match_output(context_all.select(video_idx), ids_all[text_idx], mask_all[text_idx])
            losses["vtm"] = heads.vtm(out, labels)["loss"]

        if cfg.vtg_weight > 0:
            logits = model.head_generation_logits(vt, decoder_input_ids(text_ids, model.bos_token_id), text_mask)
            losses["vtg"] = video_grounded_generation_loss(logits, text_ids, text_mask,
                                                           label_smoothing=cfg.vtg_label_smoothing)

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
        return {"loss": total, "logs": logs, "query_output": query_output.detach()}
