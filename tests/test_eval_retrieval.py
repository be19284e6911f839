"""Retrieval metrics on hand-made similarity matrices with known ranks, the two-stage rerank, tables."""
import math

import pytest
import torch

from videoqf.eval.report import format_metrics, format_table
from videoqf.eval.retrieval import (
    rerank,
    retrieval_metrics,
    text_to_video_ranks,
    two_stage_retrieval_metrics,
    video_to_text_ranks,
)

# 5 texts, 3 videos; video 0 has captions 0 and 1, video 1 has caption 2, video 2 has captions 3 and 4.
TEXT_TO_VIDEO = [0, 0, 1, 2, 2]
SIM = torch.tensor(
    [
        [0.9, 0.1, 0.0],  # text 0 -> video 0 first        (t2v rank 0)
        [0.2, 0.8, 0.5],  # text 1 -> video 0 third        (rank 2)
        [0.3, 0.6, 0.1],  # text 2 -> video 1 first        (rank 0)
        [0.7, 0.2, 0.4],  # text 3 -> video 2 second       (rank 1)
        [0.1, 0.3, 0.2],  # text 4 -> video 2 second       (rank 1)
    ]
)
# v2t: column 0 order texts 0,3,2,1,4 -> best of {0,1} is rank 0
#      column 1 order texts 1,2,4,3,0 -> caption 2 at rank 1
#      column 2 order texts 1,3,4,2,0 -> best of {3,4} is rank 1


def test_text_to_video_ranks_known():
    assert text_to_video_ranks(SIM, TEXT_TO_VIDEO).tolist() == [0, 2, 0, 1, 1]


def test_video_to_text_any_caption_counts():
    assert video_to_text_ranks(SIM, TEXT_TO_VIDEO).tolist() == [0, 1, 1]


def test_metrics_known_values():
    m = retrieval_metrics(SIM, TEXT_TO_VIDEO, ks=(1, 2, 5))
    assert m["t2v_r1"] == pytest.approx(2 / 5)
    assert m["t2v_r2"] == pytest.approx(4 / 5)
    assert m["t2v_r5"] == pytest.approx(1.0)
    assert m["t2v_mean_rank"] == pytest.approx((1 + 3 + 1 + 2 + 2) / 5)
    assert m["t2v_median_rank"] == pytest.approx(2.0)
    assert m["v2t_r1"] == pytest.approx(1 / 3)
    assert m["v2t_r2"] == pytest.approx(1.0)
    assert m["v2t_mean_rank"] == pytest.approx((1 + 2 + 2) / 3)


def test_median_of_even_count_is_midpoint():
    sim = torch.eye(4)
    sim[2, 2] = -1.0  # text 2's video drops to last (rank 3)
    m = retrieval_metrics(sim, [0, 1, 2, 3])
    # 1-based ranks 1, 1, 4, 1 -> median 1; then 1, 1, 4, 4 -> (1 + 4) / 2
    assert m["t2v_median_rank"] == 1.0
    sim[3, 3] = -1.0
    assert retrieval_metrics(sim, [0, 1, 2, 3])["t2v_median_rank"] == pytest.approx(2.5)


def test_ties_break_by_smaller_index():
    sim = torch.zeros(3, 3)  # a collapsed model: every score equal
    assert text_to_video_ranks(sim, [0, 1, 2]).tolist() == [0, 1, 2]
    assert video_to_text_ranks(sim, [0, 1, 2]).tolist() == [0, 1, 2]
    m = retrieval_metrics(sim, [0, 1, 2])
    assert m["t2v_r1"] == pytest.approx(1 / 3)  # chance, not a perfect score


def test_large_random_matches_bruteforce():
    g = torch.Generator().manual_seed(0)
    # integer scores in a small range so there are many ties
    sim = torch.randint(0, 6, (40, 15), generator=g).float()
    t2v = torch.randint(0, 15, (40,), generator=g)
    t2v[:15] = torch.arange(15)  # every video has a caption
    expected_t2v = []
    for t in range(40):
        target = sim[t, t2v[t]]
        expected_t2v.append(int(sum((sim[t, v] > target) or (sim[t, v] == target and v < t2v[t]) for v in range(15))))
    expected_v2t = []
    for v in range(15):
        best = math.inf
        for t in (t2v == v).nonzero().flatten().tolist():
            target = sim[t, v]
            rank = sum((sim[o, v] > target) or (sim[o, v] == target and o < t) for o in range(40))
            best = min(best, int(rank))
        expected_v2t.append(best)
    assert text_to_video_ranks(sim, t2v).tolist() == expected_t2v
    assert video_to_text_ranks(sim, t2v).tolist() == expected_v2t


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="every video"):
        video_to_text_ranks(torch.zeros(2, 3), [0, 1])
    with pytest.raises(ValueError, match="outside"):
        text_to_video_ranks(torch.zeros(2, 3), [0, 3])
    with pytest.raises(ValueError, match="NaN"):
        text_to_video_ranks(torch.tensor([[float("nan"), 0.0]]), [0])
    with pytest.raises(ValueError, match="one video index per text"):
        text_to_video_ranks(torch.zeros(2, 3), [0])


class RecordingScorer:
    """A matching head that prefers the true pair by a margin and records every pair it scored."""

    def __init__(self, text_to_video):
        self.text_to_video = torch.as_tensor(text_to_video)
        self.calls: list[tuple[list[int], list[int]]] = []

    def __call__(self, texts, videos):
        self.calls.append((texts.tolist(), videos.tolist()))
        return (self.text_to_video[texts] == videos).float() * 10.0


def test_rerank_scores_only_top_k_candidates():
    g = torch.Generator().manual_seed(1)
    sim = torch.randn(12, 10, generator=g)
    t2v = torch.cat([torch.arange(10), torch.tensor([3, 7])])
    scorer = RecordingScorer(t2v)
    out = rerank(sim, scorer, k=3, batch_size=5)
    pairs = [(t, v) for texts, videos in scorer.calls for t, v in zip(texts, videos)]
    assert all(len(texts) <= 5 for texts, _ in scorer.calls)
    assert len(pairs) == len(set(pairs))  # each pair scored once
    top_t2v = {(t, v) for t in range(12) for v in sim[t].topk(3).indices.tolist()}
    top_v2t = {(t, v) for v in range(10) for t in sim[:, v].topk(3).indices.tolist()}
    assert set(pairs) == top_t2v | top_v2t
    # -inf exactly outside each query's top-k; ITM + sim inside (LAVIS's sum)
    for t in range(12):
        for v in range(10):
            itm = 10.0 if t2v[t] == v else 0.0
            for matrix, chosen in ((out.text_to_video, top_t2v), (out.video_to_text, top_v2t)):
                expected = sim[t, v] + itm if (t, v) in chosen else float("-inf")
                assert matrix[t, v].item() == pytest.approx(expected)


def test_rerank_changes_ranking_as_expected():
    # contrastive stage puts the true video second; the matching head fixes it if it is in the top-k
    sim = torch.tensor([[0.5, 0.9, 0.1, 0.0], [0.9, 0.8, 0.0, 0.1], [0.0, 0.1, 0.2, 0.9], [0.1, 0.0, 0.9, 0.3]])
    t2v = [0, 1, 2, 3]
    before = retrieval_metrics(sim, t2v)
    assert before["t2v_r1"] == 0.0
    after = two_stage_retrieval_metrics(sim, t2v, RecordingScorer(t2v), k=2)
    assert after["t2v_r1"] == 1.0 and after["v2t_r1"] == 1.0
    # with k=1 the true video is never a candidate: it stays outside, behind the one candidate
    after_k1 = two_stage_retrieval_metrics(sim, t2v, RecordingScorer(t2v), k=1)
    assert after_k1["t2v_r1"] == 0.0
    # matching score alone (no sim added): a head that always prefers the highest video index
    reverse = rerank(sim, lambda t, v: v.float(), k=2, add_similarity=False)
    assert text_to_video_ranks(reverse.text_to_video, t2v).tolist() == [1, 0, 1, 0]


def test_rerank_rejects_bad_score_fn():
    with pytest.raises(ValueError, match="one score per pair"):
        rerank(torch.zeros(3, 3), lambda t, v: torch.zeros(1), k=2)
    with pytest.raises(ValueError, match="NaN"):
        rerank(torch.zeros(3, 3), lambda t, v: torch.full(t.shape, float("nan")), k=2)


def test_format_table_and_metrics():
    table = format_table(
        [{"variant": "cascaded", "t2v_r1": 0.51234, "steps": 10}, {"variant": "st", "t2v_r1": 0.5, "steps": 200}],
        ["variant", "t2v_r1", "steps"],
    )
    assert table.splitlines() == [
        "| variant  | t2v_r1 | steps |",
        "| -------- | -----: | ----: |",
        "| cascaded | 0.5123 |    10 |",
        "| st       | 0.5000 |   200 |",
    ]
    with pytest.raises(KeyError, match="row 0 has no column"):
        format_table([{"a": 1}], ["a", "b"])
    text = format_metrics(retrieval_metrics(SIM, TEXT_TO_VIDEO))
    assert "| t2v_r1 " in text and "0.4000" in text and len(text.splitlines()) == 2 + 10
