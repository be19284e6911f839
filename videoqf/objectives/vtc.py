"""Video-text contrastive loss (VTC): BLIP-2's image-text contrastive loss (ITC) for video.

Follows BLIP-2 (Li et al., 2023) and LAVIS `blip2_qformer.py` for the facts: the query outputs
and the text's first ([CLS]) token are projected to a small space (256) and L2-normalised; the
video-to-text similarity is the MAX over the queries; a learnable temperature starts at 0.07 and
is clamped to [0.001, 0.5]; label smoothing 0.1.

Two deliberate differences from LAVIS:
- the features are gathered across ranks WITH gradient (LAVIS's ITC gathers without), so every
  rank's negatives also train the other ranks' towers;
- several captions of one video in the (global) batch are not each other's negatives: the target
  of a row is spread uniformly over every column with the same video id (as BLIP's retrieval
  fine-tuning does with image ids), then label smoothing mixes in the uniform distribution:
  target = (1 - eps) * same_video / count + eps / N. With distinct ids this is exactly
  `F.cross_entropy(logits, arange, label_smoothing=eps)`.

Distributed equivalence (what `tests/test_distributed_vtc.py` checks). Each rank computes the
loss over its LOCAL rows (its videos against all texts, its texts against all videos), averaged
over those rows, so with equal local batch sizes the mean over ranks of the local losses equals
the loss of one process on the concatenated batch. The gather's backward sums over ranks, so the
gradient reaching rank r's features is world_size times the gradient of that global loss;
DDP / DeepSpeed average parameter gradients over ranks (divide by world_size), which turns the
sum back into exactly the gradient of the global-batch loss.

Padded queries (``framewise``: the queries of padded frames) take no part in the max: each is replaced
by the clip's first real query before the similarities (``fill_padded_queries``), so no mask has to be
gathered and a max over the queries sees real ones only.

Notation: B local batch, N = world_size * B global batch, Q queries, H hidden, D embed dim.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum
from torch import nn

from videoqf.objectives.config import ObjectivesConfig
from videoqf.objectives.distributed import gather_cat, get_rank


def same_video_targets(
    video_ids: torch.Tensor, video_ids_all: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Target distribution of each local row over the global columns.

    video_ids: [B], video_ids_all: [N] -> [B, N], rows summing to 1, uniform over the columns
    that show the same video (the positive is always one of them).
    """
    same = (video_ids[:, None] == video_ids_all[None, :]).to(dtype)
    return same / same.sum(dim=-1, keepdim=True)


def fill_padded_queries(video_feat: torch.Tensor, query_mask: torch.Tensor | None) -> torch.Tensor:
    """video_feat [B, Q, D] with every query where ``query_mask`` [B, Q] is False replaced by the clip's first
    real one (each clip has one), so a max over the queries equals the max over the real ones."""
    if query_mask is None:
        return video_feat
    first = video_feat[torch.arange(video_feat.shape[0], device=video_feat.device), query_mask.int().argmax(dim=1)]
    return torch.where(query_mask[..., None], video_feat, first[:, None])


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float) -> torch.Tensor:
    """Mean over rows of -sum_j t_ij log softmax(logits_i)_j, with t mixed with the uniform by
    `label_smoothing`. logits, targets: [B, N] -> scalar."""
    num_classes = logits.shape[-1]
    targets = (1.0 - label_smoothing) * targets + label_smoothing / num_classes
    # Half-precision logits are upcast: the softmax over a large global batch needs the range.
    log_probs = F.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    return -(targets * log_probs).sum(dim=-1).mean()


class VideoTextContrastive(nn.Module):
    """Projections, temperature and loss of VTC.

    query_output: [B, Q, H] (unimodal Q-Former pass), text_cls: [B, Ht] (text branch, first token).
    """

    def __init__(
        self,
        hidden: int,
        embed_dim: int = 256,
        *,
        text_hidden: int | None = None,
        temperature_init: float = 0.07,
        temperature_min: float = 0.001,
        temperature_max: float = 0.5,
        learnable_temperature: bool = True,
        label_smoothing: float = 0.1,
        gather_with_grad: bool = True,
    ) -> None:
        super().__init__()
        self.video_proj = nn.Linear(hidden, embed_dim)
        self.text_proj = nn.Linear(text_hidden or hidden, embed_dim)
        # Shape [1], not a 0-dim scalar: DeepSpeed broadcasts parameters as bytes, which 0-dim tensors refuse.
        self.temperature = nn.Parameter(
            torch.tensor([float(temperature_init)]), requires_grad=learnable_temperature
        )
        self.temperature_range = (temperature_min, temperature_max)
        self.label_smoothing = label_smoothing
        self.gather_with_grad = gather_with_grad

    @classmethod
    def from_config(cls, hidden: int, config: ObjectivesConfig, *, text_hidden: int | None = None):
        return cls(
            hidden,
            config.embed_dim,
            text_hidden=text_hidden,
            temperature_init=config.temperature_init,
            temperature_min=config.temperature_min,
            temperature_max=config.temperature_max,
            learnable_temperature=config.learnable_temperature,
            label_smoothing=config.vtc_label_smoothing,
            gather_with_grad=config.gather_with_grad,
        )

    def embed_video(self, query_output: torch.Tensor) -> torch.Tensor:
        """[B, Q, H] -> unit-norm [B, Q, D] (one embedding per query)."""
        return F.normalize(self.video_proj(query_output), dim=-1)

    def embed_text(self, text_cls: torch.Tensor) -> torch.Tensor:
        """[B, Ht] -> unit-norm [B, D]."""
        return F.normalize(self.text_proj(text_cls), dim=-1)

    def forward(
        self,
        query_output: torch.Tensor,
        text_cls: torch.Tensor,
        video_ids: torch.Tensor | None = None,
        *,
        gather: bool = True,
        query_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Contrastive loss of the local rows against the (gathered) global batch.

        video_ids: [B] long, the same id for captions of one video; None means every entry is
        its own video. gather=False keeps the computation local (evaluation, or a deliberately
        local loss). query_mask: [B, Q] bool, False for padded queries (None: all real).

        Returns a dict with `loss` (scalar, mean of the two directions), `loss_v2t`, `loss_t2v`,
        `sim_v2t` and `sim_t2v` ([B, N] logits, i.e. similarity / temperature, local rows
        against global columns: what `sample_hard_negatives` takes), `video_ids_all` [N],
        `video_feat` [B, Q, D], `text_feat` [B, D] and `temperature` (detached).
        """
        batch = query_output.shape[0]
        if text_cls.shape[0] != batch:
            raise ValueError(f"query_output has batch {batch} but text_cls has {text_cls.shape[0]}")
        # Put the temperature back into range in place, as BLIP-2 does: a clamp inside the
        # graph would zero its gradient and leave it stuck at the bound.
        with torch.no_grad():
            self.temperature.clamp_(*self.temperature_range)

        rank = get_rank() if gather else 0
        if video_ids is None:
            video_ids = torch.arange(batch, device=query_output.device) + rank * batch
        elif video_ids.shape != (batch,):
            raise ValueError(f"video_ids must have shape [{batch}], got {tuple(video_ids.shape)}")

        video_feat = fill_padded_queries(self.embed_video(query_output), query_mask)
        text_feat = self.embed_text(text_cls)
        if gather:
            video_feat_all = gather_cat(video_feat, with_grad=self.gather_with_grad)
            text_feat_all = gather_cat(text_feat, with_grad=self.gather_with_grad)
            video_ids_all = gather_cat(video_ids, with_grad=False)
        else:
            video_feat_all, text_feat_all, video_ids_all = video_feat, text_feat, video_ids

        # A video matches a text as well as its best query does.
        sim_v2t = einsum(video_feat, text_feat_all, "b q d, n d -> b n q").amax(dim=-1) / self.temperature
        sim_t2v = einsum(text_feat, video_feat_all, "b d, n q d -> b n q").amax(dim=-1) / self.temperature

        loss_dtype = torch.promote_types(sim_v2t.dtype, torch.float32)
        targets = same_video_targets(video_ids, video_ids_all, loss_dtype)
        loss_v2t = soft_cross_entropy(sim_v2t, targets, label_smoothing=self.label_smoothing)
        loss_t2v = soft_cross_entropy(sim_t2v, targets, label_smoothing=self.label_smoothing)
        return {
            "loss": (loss_v2t + loss_t2v) / 2,
            "loss_v2t": loss_v2t,
            "loss_t2v": loss_t2v,
            "sim_v2t": sim_v2t,
            "sim_t2v": sim_t2v,
            "video_ids_all": video_ids_all,
            "video_feat": video_feat,
            "text_feat": text_feat,
            "temperature": self.temperature.detach()[0].clone(),
        }
