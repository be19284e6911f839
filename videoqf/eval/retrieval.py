"""Text-video retrieval metrics: Recall@K, mean/median rank, and BLIP-2's two-stage rerank.

Protocol (as LAVIS ``RetrievalTask.itm_eval`` / BLIP-2 ``compute_sim_matrix``, the MSR-VTT convention):

- text-to-video (t2v): each text is a query; its answer is its one video ``text_to_video[t]``.
- video-to-text (v2t): each video is a query; a video may have several captions, and its rank is the
  best (smallest) rank of ANY of its captions among all texts.
- Recall@K is the fraction of queries whose rank is < K (ranks 0-based); LAVIS reports it x100, we
  report a fraction in [0, 1]. Mean/median rank are 1-based (1 = the answer came first), median of an
  even count is the mean of the two middle values (as ``numpy.median``).
- Ties are broken deterministically by index: among equal scores the candidate with the smaller index
  ranks first (a stable sort). LAVIS sorts with ``np.argsort(...)[::-1]``, whose tie order is
  unspecified; a collapsed model with constant scores therefore scores near chance here, not 1.0.

Two-stage protocol (BLIP-2, Li et al. 2023, Sec. 4.4; LAVIS ``blip2.compute_sim_matrix``): the
contrastive similarity picks the top ``k`` candidates of every query (``k_test``), the matching (ITM)
head scores only those pairs, and LAVIS sets the final score of a candidate to
``itm_logit + contrastive_sim`` and of every other candidate to -100. We use -inf for the others (so no
candidate outside the top-k can ever outrank one inside, whatever the logit scale) and keep the sum by
default (``add_similarity=True``); ``add_similarity=False`` ranks by the matching score alone.

Notation: T texts, V videos. ``sim: [T, V]``, higher = more similar.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange

# score_fn(text_indices: [n], video_indices: [n]) -> scores [n]: the caller's matching head on n pairs.
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_sim(sim: torch.Tensor) -> None:
    if sim.dim() != 2:
        raise ValueError(f"sim must be [num_texts, num_videos], got shape {tuple(sim.shape)}")
    if torch.isnan(sim).any():
        raise ValueError("sim contains NaN: ranks would be meaningless")


def _check_inputs(sim: torch.Tensor, text_to_video: torch.Tensor | Sequence[int]) -> torch.Tensor:
    _check_sim(sim)
    text_to_video = torch.as_tensor(text_to_video, dtype=torch.long, device=sim.device)
    if text_to_video.shape != (sim.shape[0],):
        raise ValueError(
            f"text_to_video must have one video index per text ({sim.shape[0]}), "
            f"got shape {tuple(text_to_video.shape)}"
        )
    if text_to_video.numel() and (text_to_video.min() < 0 or text_to_video.max() >= sim.shape[1]):
        raise ValueError(f"text_to_video has indices outside [0, {sim.shape[1]})")
    return text_to_video


def _positions(scores: torch.Tensor) -> torch.Tensor:
    """0-based rank of every column within its row, higher score first, ties by smaller index.

    scores: [Q, C] -> positions [Q, C] (long).
    """
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    positions = torch.empty_like(order)
    ranks = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    return positions.scatter_(1, order, ranks)


def text_to_video_ranks(sim: torch.Tensor, text_to_video: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """0-based rank of each text's video among all videos.

    sim: [T, V]; text_to_video: [T] -> ranks [T] (long).
    """
    text_to_video = _check_inputs(sim, text_to_video)
    positions = _positions(sim)
    return positions.gather(1, text_to_video[:, None]).squeeze(1)


def video_to_text_ranks(sim: torch.Tensor, text_to_video: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """0-based rank, for each video, of the best-ranked of its captions among all texts.

    sim: [T, V]; text_to_video: [T] -> ranks [V] (long). Every video needs at least one caption.
    """
    text_to_video = _check_inputs(sim, text_to_video)
    num_texts, num_videos = sim.shape
    captioned = torch.zeros(num_videos, dtype=torch.bool, device=sim.device)
    captioned[text_to_video] = True
    if not captioned.all():
        missing = torch.nonzero(~captioned).flatten().tolist()
        raise ValueError(f"video-to-text needs a caption for every video; videos {missing[:10]} have none")
    positions = _positions(rearrange(sim, "t v -> v t"))  # [V, T]
    caption_ranks = positions[text_to_video, torch.arange(num_texts, device=sim.device)]  # [T]
    best = torch.full((num_videos,), num_texts, dtype=torch.long, device=sim.device)
    return best.scatter_reduce(0, text_to_video, caption_ranks, reduce="amin")


def rank_metrics(ranks: torch.Tensor, prefix: str, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K (fraction), mean and median rank (1-based) from 0-based ranks [Q].

    Keys: ``{prefix}_r{k}`` for each k, ``{prefix}_mean_rank``, ``{prefix}_median_rank``.
    """
    if ranks.numel() == 0:
        raise ValueError(f"{prefix}: no queries to evaluate")
    ranks = ranks.double()
    metrics = {f"{prefix}_r{k}": (ranks < k).double().mean().item() for k in ks}
    metrics[f"{prefix}_mean_rank"] = (ranks + 1).mean().item()
    metrics[f"{prefix}_median_rank"] = torch.quantile(ranks + 1, 0.5).item()
    return metrics


def retrieval_metrics(
    sim: torch.Tensor,
    text_to_video: torch.Tensor | Sequence[int],
    *,
    v2t_sim: torch.Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """t2v and v2t Recall@K and mean/median rank.

    sim: [T, V] scores used for t2v (and for v2t unless ``v2t_sim`` is given, e.g. the v2t matrix of
    :func:`rerank`); text_to_video: [T]. Keys ``t2v_r1, t2v_r5, t2v_r10, t2v_mean_rank,
    t2v_median_rank`` and the same with ``v2t_``.
    """
    v2t_sim = sim if v2t_sim is None else v2t_sim
    if v2t_sim.shape != sim.shape:
        raise ValueError(f"v2t_sim shape {tuple(v2t_sim.shape)} differs from sim {tuple(sim.shape)}")
    return {
        **rank_metrics(text_to_video_ranks(sim, text_to_video), "t2v", ks),
        **rank_metrics(video_to_text_ranks(v2t_sim, text_to_video), "v2t", ks),
    }


@dataclass(frozen=True)
class Reranked:
    """Final scores of the two-stage protocol, both [T, V]; -inf outside each query's top-k.

    ``text_to_video``: row t holds the scores of text t's k candidate videos.
    ``video_to_text``: column v holds the scores of video v's k candidate texts.
    """

    text_to_video: torch.Tensor
    video_to_text: torch.Tensor


def call_score_fn(score_fn: ScoreFn, text_indices: torch.Tensor, video_indices: torch.Tensor) -> torch.Tensor:
    """``score_fn`` on n text-video pairs ([n], [n] -> [n]), checked for shape and NaN, without grad."""
    with torch.no_grad():
        scores = torch.as_tensor(score_fn(text_indices, video_indices))
    if scores.shape != text_indices.shape:
        raise ValueError(
            f"score_fn must return one score per pair, shape {tuple(text_indices.shape)}, got {tuple(scores.shape)}"
        )
    if torch.isnan(scores).any():
        raise ValueError("score_fn returned NaN for some pairs")
    return scores


def _top_k_mask(sim: torch.Tensor, k: int) -> torch.Tensor:
    """[Q, C] -> bool mask of each row's k best columns (ties by smaller index, as in the ranks)."""
    return _positions(sim) < k


@torch.no_grad()
def rerank(
    sim: torch.Tensor,
    score_fn: ScoreFn,
    k: int = 16,
    *,
    batch_size: int = 256,
    add_similarity: bool = True,
) -> Reranked:
    """BLIP-2 two-stage retrieval: contrastive top-k candidates, rescored by a matching head.

    sim: [T, V] contrastive similarity. ``score_fn(text_indices [n], video_indices [n]) -> [n]`` is
    called in batches of at most ``batch_size`` pairs, only on the union of the t2v candidates (each
    text's top-k videos) and the v2t candidates (each video's top-k texts), each pair once. ``k`` is
    capped at the number of candidates. Final score = matching score (+ ``sim`` when
    ``add_similarity``, as LAVIS) for candidates, -inf for the rest.
    """
    _check_sim(sim)
    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be >= 1, got k={k}, batch_size={batch_size}")
    t2v_mask = _top_k_mask(sim, min(k, sim.shape[1]))
    v2t_mask = rearrange(_top_k_mask(rearrange(sim, "t v -> v t"), min(k, sim.shape[0])), "v t -> t v")
    pairs = torch.nonzero(t2v_mask | v2t_mask)  # [P, 2], row-major so the call order is deterministic
    scores = []
    for start in range(0, pairs.shape[0], batch_size):
        batch = pairs[start : start + batch_size]
        scores.append(call_score_fn(score_fn, batch[:, 0], batch[:, 1]).to(device=sim.device, dtype=sim.dtype))
    matched = torch.zeros_like(sim)
    matched[pairs[:, 0], pairs[:, 1]] = torch.cat(scores)
    if add_similarity:
        matched = matched + sim
    minus_inf = torch.full_like(sim, float("-inf"))
    return Reranked(
        text_to_video=torch.where(t2v_mask, matched, minus_inf),
        video_to_text=torch.where(v2t_mask, matched, minus_inf),
    )


def two_stage_retrieval_metrics(
    sim: torch.Tensor,
    text_to_video: torch.Tensor | Sequence[int],
    score_fn: ScoreFn,
    k: int = 16,
    *,
    batch_size: int = 256,
    add_similarity: bool = True,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """:func:`retrieval_metrics` on the scores of :func:`rerank` (same keys)."""
    reranked = rerank(sim, score_fn, k, batch_size=batch_size, add_similarity=add_similarity)
    return retrieval_metrics(reranked.text_to_video, text_to_video, v2t_sim=reranked.video_to_text, ks=ks)
