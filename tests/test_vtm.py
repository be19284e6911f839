"""Hard-negative sampler (property test over many draws) and the VTM head against a reference."""
import torch

from videoqf.objectives.vtm import (
    HardNegatives,
    VideoTextMatching,
    matching_pairs,
    sample_hard_negatives,
)


def test_sampler_never_returns_positive_or_same_video():
    gen = torch.Generator().manual_seed(0)
    world, batch = 3, 4
    for trial in range(300):
        ids_global = torch.randint(0, 6, (world * batch,), generator=gen)
        rank = trial % world
        ids_local = ids_global[rank * batch : (rank + 1) * batch]
        # Large logits: the positive/same-video columns are the most attractive ones.
        sim_v2t = torch.randn(batch, world * batch, generator=gen) * 5
        sim_t2v = torch.randn(batch, world * batch, generator=gen) * 5
        same = ids_local[:, None] == ids_global[None, :]
        sim_v2t[same] += 50
        sim_t2v[same] += 50
        neg = sample_hard_negatives(sim_t2v, sim_v2t, ids_local, ids_global, rank, gen)
        for i in range(batch):
            has_negative = bool((ids_global != ids_local[i]).any())
            for idx in (neg.text_idx[i].item(), neg.video_idx[i].item()):
                if not has_negative:
                    assert idx == -1
                    continue
                assert idx != rank * batch + i
                assert ids_global[idx] != ids_local[i]


def test_sampler_follows_softmax_of_similarities():
    """Column j among the allowed ones is drawn with frequency softmax(sim)_j."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.tensor([0, 1, 2, 0])
    sim = torch.tensor([[9.0, 0.0, 1.0, 9.0]] * 4)
    counts = torch.zeros(4)
    draws = 4000
    for _ in range(draws):
        neg = sample_hard_negatives(sim, sim, ids, ids, 0, gen)
        counts[neg.text_idx[0]] += 1
    expected = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    assert counts[0] == 0 and counts[3] == 0
    torch.testing.assert_close(counts[1:3] / draws, expected, atol=0.03, rtol=0)


def test_single_video_batch_has_no_negative():
    ids = torch.tensor([4, 4])
    neg = sample_hard_negatives(torch.zeros(2, 2), torch.zeros(2, 2), ids, ids, 0)
    assert neg.text_idx.tolist() == [-1, -1] and neg.video_idx.tolist() == [-1, -1]
    video_idx, text_idx, labels = matching_pairs(neg, rank=0)
    assert video_idx.tolist() == [0, 1] and text_idx.tolist() == [0, 1] and labels.tolist() == [1, 1]


def test_matching_pairs_layout_on_rank_one():
    neg = HardNegatives(text_idx=torch.tensor([0, -1]), video_idx=torch.tensor([1, 0]))
    video_idx, text_idx, labels = matching_pairs(neg, rank=1)
    assert video_idx.tolist() == [2, 3, 2, 1, 0]
    assert text_idx.tolist() == [2, 3, 0, 2, 3]
    assert labels.tolist() == [1, 1, 0, 0, 0]


def test_vtm_head_matches_reference_values_and_grads():
    torch.manual_seed(0)
    n, q, h = 6, 3, 5
    module = VideoTextMatching(h).double()
    qo = torch.randn(n, q, h, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, 1, 0, 0, 0, 1])
    out = module(qo, labels)
    grads = torch.autograd.grad(out["loss"], [qo, module.itm_head.weight])

    w, b = module.itm_head.weight, module.itm_head.bias
    ref = 0.0
    for i in range(n):
        logit = sum(w @ qo[i, k] + b for k in range(q)) / q
        ref = ref - (logit[labels[i]] - torch.log(torch.exp(logit).sum())) / n
    ref_grads = torch.autograd.grad(ref, [qo, w])
    assert out["logits"].shape == (n, 2)
    torch.testing.assert_close(out["loss"], ref)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)
