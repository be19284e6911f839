"""Video-text matching (VTM): BLIP-2's image-text matching (ITM) with hard negatives, for video.

Follows BLIP-2 (Li et al., 2023) / LAVIS `blip2_qformer.py` for the facts: for every video a
negative text and for every text a negative video are drawn with probability softmax(similarity)
over the GLOBAL batch (the VTC logits); the pairs go through the Q-Former with the bi-directional
mask (queries and text see each other); a binary head on every query output, logits averaged over
the queries; cross-entropy with labels 1 (match) / 0 (no match), no label smoothing.

Negatives never share the video id of the anchor (so neither the positive nor another caption of
the same video). LAVIS adds 1e-4 to the softmax and zeroes the positives; we mask the excluded
columns to -inf before the softmax instead, so an excluded column has probability exactly 0.
If a row has NO valid negative (every entry of the global batch shows the same video, e.g. a
global batch of one), its index is -1 and `matching_pairs` drops that negative pair: the
batch then has fewer negative pairs, never a false one.

Notation: B local batch, N global batch, Q queries, H hidden.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class HardNegatives:
    """Global-batch indices of the drawn negatives.

    text_idx: [B], for each local video a text index in [0, N), -1 where none exists.
    video_idx: [B], for each local text a video index in [0, N), -1 where none exists.
    """

    text_idx: torch.Tensor
    video_idx: torch.Tensor


def _draw_excluding(sim: torch.Tensor, allowed: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One column per row of sim [B, N], drawn from softmax over the allowed columns; -1 when a
    row allows none."""
    has_any = allowed.any(dim=-1)
    weights = F.softmax(sim.float().masked_fill(~allowed, float("-inf")), dim=-1)
    # Rows without a valid column are all-NaN; give them a harmless placeholder and discard the draw.
    weights = torch.where(has_any[:, None], weights, torch.ones_like(weights))
    drawn = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    return torch.where(has_any, drawn, torch.full_like(drawn, -1))


@torch.no_grad()
def sample_hard_negatives(
    sim_t2v: torch.Tensor,
    sim_v2t: torch.Tensor,
    video_ids_local: torch.Tensor,
    video_ids_global: torch.Tensor,
    rank: int,
    generator: torch.Generator | None = None,
) -> HardNegatives:
    """Draw a hard negative text per local video and a hard negative video per local text.

    sim_t2v, sim_v2t: [B, N] VTC logits (local rows, global columns; `VideoTextContrastive`
    returns them). video_ids_local: [B]; video_ids_global: [N], whose slice
    [rank * B, (rank + 1) * B] must be video_ids_local. generator: a torch.Generator on the
    similarities' device, for reproducible draws.
    """
    batch, total = sim_v2t.shape
    if sim_t2v.shape != (batch, total):
        raise ValueError(f"sim_t2v {tuple(sim_t2v.shape)} and sim_v2t {tuple(sim_v2t.shape)} differ")
    if video_ids_local.shape != (batch,) or video_ids_global.shape != (total,):
        raise ValueError(
            f"expected video_ids_local [{batch}] and video_ids_global [{total}], got "
            f"{tuple(video_ids_local.shape)} and {tuple(video_ids_global.shape)}"
        )
    if not torch.equal(video_ids_global[rank * batch : (rank + 1) * batch], video_ids_local):
        raise ValueError(f"video_ids_global's slice for rank {rank} is not video_ids_local")
    different_video = video_ids_local[:, None] != video_ids_global[None, :]
    return HardNegatives(
        text_idx=_draw_excluding(sim_v2t, different_video, generator),
        video_idx=_draw_excluding(sim_t2v, different_video, generator),
    )


def matching_pairs(negatives: HardNegatives, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Global (video, text) index pairs and labels for the VTM forward pass.

    Order as in BLIP-2: the B positives, then (video i, its negative text), then (negative
    video, text i); pairs whose negative is -1 are dropped. Returns video_idx [B'], text_idx [B'],
    labels [B'] (1 = match, 0 = not), indices into the gathered global batch.
    """
    batch = negatives.text_idx.shape[0]
    local = torch.arange(batch, device=negatives.text_idx.device) + rank * batch
    video_idx = torch.cat([local, local, negatives.video_idx])
    text_idx = torch.cat([local, negatives.text_idx, local])
    labels = torch.cat([torch.ones_like(local), torch.zeros_like(local), torch.zeros_like(local)])
    keep = (video_idx >= 0) & (text_idx >= 0)
    return video_idx[keep], text_idx[keep], labels[keep]


class VideoTextMatching(nn.Module):
    """Binary matching head over the bi-directional query outputs.

    query_output: [B', Q, H] (only the query positions of the joint pass), labels: [B'] long.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.itm_head = nn.Linear(hidden, 2)

    def logits(self, query_output: torch.Tensor) -> torch.Tensor:
        """[B', Q, H] -> [B', 2]: the mean over queries of the per-query logits."""
        return self.itm_head(query_output).mean(dim=1)

    def forward(self, query_output: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns `loss` (scalar) and `logits` [B', 2] (``logits``)."""
        logits = self.logits(query_output)
        loss = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), labels)
        return {"loss": loss, "logits": logits}
