"""Self-attention masks of the Q-Former's three modes (BLIP-2, arXiv:2301.12597, figure 2).

Positions are ``[queries (Q); text (L)]``. Masks are boolean, True = may attend, shaped [B, 1, S, K] so
they broadcast over heads, and are built once per forward pass.

- ``bidirectional`` (matching, VTM): every position sees every non-padded position.
- ``unimodal`` (contrastive, VTC): queries see queries, text sees text; neither sees the other.
- ``causal`` (generation, VTG): queries see queries; text token i sees all queries and text tokens <= i.

With a cache (generation step by step), the keys are ``[past queries; past text; new text]`` and the
query rows are absent.
"""
from __future__ import annotations

import torch

MODES = ("unimodal", "bidirectional", "causal")


def self_attention_mask(
    mode: str,
    *,
    num_queries: int,
    text_mask: torch.Tensor | None,
    batch_size: int,
    device: torch.device,
    past_queries: int = 0,
    past_text: int = 0,
) -> torch.Tensor | None:
    """Build the [B, 1, S, K] mask, or None when every position may see every other (fast SDPA path).

    Args:
        num_queries: query positions in this pass (0 when they come from the cache).
        text_mask: [B, past_text + L] bool, True for real tokens (None: no text at all).
        past_queries / past_text: cached query / text positions in front of the keys.
    """
    if mode not in MODES:
        raise ValueError(f"unknown attention mode {mode!r}; expected one of {MODES}")
    total_text = 0 if text_mask is None else text_mask.shape[1]
    new_text = total_text - past_text
    if num_queries and past_queries:
        raise ValueError("queries are either recomputed or cached, not both")
    n_q = num_queries or past_queries
    if text_mask is None:
        return None  # queries alone: unrestricted attention (SDPA's fast path)

    keys = n_q + total_text
    key_is_query = torch.arange(keys, device=device) < n_q
    key_text_pos = torch.arange(keys, device=device) - n_q  # text index of each key (negative: a query)
    all_keys = torch.ones(num_queries + new_text, keys, dtype=torch.bool, device=device)

    q_rows = all_keys[:num_queries] if mode == "bidirectional" else key_is_query.expand(num_queries, -1)
    text_idx = torch.arange(past_text, total_text, device=device)[:, None]  # absolute text index per row
    if mode == "unimodal":
        t_rows = ~key_is_query.expand(new_text, -1)
    elif mode == "bidirectional":
        t_rows = all_keys[num_queries:]
    else:  # causal
        t_rows = key_is_query | (key_text_pos <= text_idx)
    mask = torch.cat([q_rows, t_rows], dim=0)[None]  # [1, S, K]
    key_valid = torch.cat([key_is_query[:n_q].expand(batch_size, -1), text_mask.bool()], dim=1)
    mask = mask & key_valid[:, None, :]
    # Every row keeps its own position, so a padded text row that sees nothing else (unimodal mode,
    # say) does not make SDPA return NaN. Padded keys stay hidden from every real row.
    own = torch.arange(mask.shape[1], device=device)[:, None] + (n_q + past_text - num_queries)
    mask = mask | (torch.arange(keys, device=device)[None, :] == own)
    return mask[:, None]


def encoder_attention_mask(encoder_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, N] bool (True = real token) -> [B, 1, 1, N], or None when nothing is padded."""
    if encoder_mask is None:
        return None
    encoder_mask = encoder_mask.bool()
    if bool(encoder_mask.all()):
        return None
    if not bool(encoder_mask.any(-1).all()):
        raise ValueError("every sample needs at least one unmasked encoder token for cross-attention")
    return encoder_mask[:, None, None, :]
