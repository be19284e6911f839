"""VTC against a loop-by-loop reference: values and gradients, video-id aware targets."""
import math

import pytest
import torch
import torch.nn.functional as F

from videoqf.objectives.config import ObjectivesConfig
from videoqf.objectives.vtc import VideoTextContrastive

B, Q, H, D = 5, 3, 8, 4


def reference_vtc(query_output, text_cls, video_ids, module, eps):
    """Written with explicit loops and the log-sum-exp formula."""
    wv, bv = module.video_proj.weight, module.video_proj.bias
    wt, bt = module.text_proj.weight, module.text_proj.bias
    temp = module.temperature[0]  # the parameter has shape [1]
    n = len(video_ids)
    v = [[None] * Q for _ in range(n)]
    t = [None] * n
    for i in range(n):
        for q in range(Q):
            e = wv @ query_output[i, q] + bv
            v[i][q] = e / torch.sqrt((e * e).sum())
        e = wt @ text_cls[i] + bt
        t[i] = e / torch.sqrt((e * e).sum())

    def sim(i, j):  # video i, text j
        return torch.stack([(v[i][q] * t[j]).sum() for q in range(Q)]).max() / temp

    def row_loss(logits, i):
        lse = torch.logsumexp(torch.stack(logits), 0)
        positives = [j for j in range(n) if video_ids[j] == video_ids[i]]
        total = 0.0
        for j in range(n):
            target = (1 - eps) * (1.0 / len(positives) if j in positives else 0.0) + eps / n
            total = total + target * (lse - logits[j])
        return total

    v2t = sum(row_loss([sim(i, j) for j in range(n)], i) for i in range(n)) / n
    t2v = sum(row_loss([sim(j, i) for j in range(n)], i) for i in range(n)) / n
    return (v2t + t2v) / 2


@pytest.mark.parametrize("video_ids", [[0, 1, 2, 3, 4], [7, 3, 7, 1, 3]])
def test_vtc_matches_loop_reference_values_and_grads(video_ids):
    torch.manual_seed(0)
    module = VideoTextContrastive(H, D, temperature_init=0.1, label_smoothing=0.1).double()
    qo = torch.randn(B, Q, H, dtype=torch.float64, requires_grad=True)
    tc = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor(video_ids)

    out = module(qo, tc, ids)
    grads = torch.autograd.grad(out["loss"], [qo, tc, module.temperature, module.video_proj.weight])

    ref = reference_vtc(qo, tc, ids.tolist(), module, 0.1)
    ref_grads = torch.autograd.grad(ref, [qo, tc, module.temperature, module.video_proj.weight])

    torch.testing.assert_close(out["loss"], ref, rtol=1e-10, atol=1e-10)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10)
    assert out["sim_v2t"].shape == (B, B) and out["sim_t2v"].shape == (B, B)
    torch.testing.assert_close(out["sim_t2v"], out["sim_v2t"].T)


def test_distinct_ids_equal_torch_cross_entropy_with_smoothing():
    torch.manual_seed(1)
    module = VideoTextContrastive(H, D, label_smoothing=0.1)
    qo, tc = torch.randn(B, Q, H), torch.randn(B, H)
    out = module(qo, tc, None)
    target = torch.arange(B)
    expected = (
        F.cross_entropy(out["sim_v2t"], target, label_smoothing=0.1)
        + F.cross_entropy(out["sim_t2v"], target, label_smoothing=0.1)
    ) / 2
    torch.testing.assert_close(out["loss"], expected)


def test_same_video_captions_are_not_negatives():
    """With texts 0 and 1 captioning one video, both are positives of videos 0 and 1 alike, so
    swapping the two texts leaves the loss unchanged; with distinct ids it does not."""
    torch.manual_seed(2)
    module = VideoTextContrastive(H, D, label_smoothing=0.1)
    qo, tc = torch.randn(4, Q, H), torch.randn(4, H)
    swapped = tc[[1, 0, 2, 3]]
    shared = torch.tensor([0, 0, 1, 2])
    torch.testing.assert_close(module(qo, tc, shared)["loss"], module(qo, swapped, shared)["loss"])
    distinct = torch.tensor([0, 3, 1, 2])
    assert (module(qo, tc, distinct)["loss"] - module(qo, swapped, distinct)["loss"]).abs() > 1e-3


def test_temperature_is_clamped_and_from_config():
    cfg = ObjectivesConfig(embed_dim=D, temperature_init=0.05)
    module = VideoTextContrastive.from_config(H, cfg)
    assert module.video_proj.out_features == D
    with torch.no_grad():
        module.temperature.fill_(5.0)
    out = module(torch.randn(2, Q, H), torch.randn(2, H))
    assert math.isclose(out["temperature"].item(), 0.5)
    with torch.no_grad():
        module.temperature.fill_(-1.0)
    module(torch.randn(2, Q, H), torch.randn(2, H))
    assert math.isclose(module.temperature.item(), 0.001, rel_tol=1e-6)


def test_total_loss_weights_and_errors():
    cfg = ObjectivesConfig(vtc_weight=2.0, vtm_weight=0.0, vtg_weight=0.5)
    total = cfg.total_loss({"vtc": torch.tensor(1.0), "vtg": torch.tensor(4.0)})
    assert total.item() == 4.0
    with pytest.raises(KeyError, match="vtx"):
        cfg.total_loss({"vtc": torch.tensor(1.0), "vtg": torch.tensor(1.0), "vtx": torch.tensor(1.0)})
    with pytest.raises(KeyError, match="vtg"):
        cfg.total_loss({"vtc": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="temperature"):
        ObjectivesConfig(temperature_init=0.9)
