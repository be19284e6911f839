"""Video-grounded generation loss (VTG): BLIP-2's image-grounded text generation (ITG), for video.

Follows BLIP-2 (Li et al., 2023) / LAVIS `blip2_qformer.py`: the caption's first token ([CLS])
is replaced by a BOS/[DEC] token (`decoder_input_ids`), the text runs through the Q-Former with
the multimodal-causal mask (every text token sees all queries and the text before it; the
queries' keys/values come from the unimodal pass's cache, `past_key_values`), and the LM head's
output at position t predicts token t + 1. The loss is cross-entropy with label smoothing 0.1,
averaged over the predicted tokens that are not padding (BLIP-2 sets padded labels to -100).
The BOS position itself is never a target: only positions 1..L-1 of the original ids are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def decoder_input_ids(text_ids: torch.Tensor, bos_token_id: int) -> torch.Tensor:
    """text_ids [B, L] -> copy with the first token replaced by `bos_token_id`."""
    ids = text_ids.clone()
    ids[:, 0] = bos_token_id
    return ids


def video_grounded_generation_loss(
    logits: torch.Tensor,
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    *,
    label_smoothing: float = 0.1,
) -> torch.Tensor:
    """Shifted causal LM loss.

    logits: [B, L, V] from `qformer.lm_logits` on the causal pass over `decoder_input_ids`;
    text_ids: [B, L] the original ids (targets); text_mask: [B, L] bool/int, 0 on padding.
    Returns the mean over non-padding targets text_ids[:, 1:] (NaN if there is none).
    """
    if logits.shape[:2] != text_ids.shape or text_mask.shape != text_ids.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)}, text_ids {tuple(text_ids.shape)} and text_mask "
            f"{tuple(text_mask.shape)} disagree on [B, L]"
        )
    targets = text_ids[:, 1:].masked_fill(~text_mask[:, 1:].bool(), -100)
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).to(torch.promote_types(logits.dtype, torch.float32)),
        targets.flatten(),
        ignore_index=-100,
        label_smoothing=label_smoothing,
    )
