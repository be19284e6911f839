"""The stability kit: query-diversity regulariser and uncertainty weighting, alone and inside stage 1."""
import math

import pytest
import torch

from videoqf.backends.presets import PRESETS
from videoqf.data.synthetic import load_tokenizer
from videoqf.models.config import ModelConfig
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.objectives.config import ObjectivesConfig
from videoqf.objectives.stage1 import Stage1Loss
from videoqf.objectives.stability import UncertaintyWeighting, query_diversity
from videoqf.train.logging import query_collapse


def test_query_diversity_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, generator=g)
    total = 0.0
    for b in range(3):
        pairs = []
        for i in range(4):
            for j in range(4):
                if i != j:
                    cos = float(x[b, i] @ x[b, j]) / (float(x[b, i].norm()) * float(x[b, j].norm()))
                    pairs.append(cos**2)
        total += sum(pairs) / len(pairs)
    assert query_diversity(x).item() == pytest.approx(total / 3, rel=1e-5)
    assert query_diversity(torch.eye(4)[None]).item() == pytest.approx(0.0, abs=1e-7)
    assert query_diversity(torch.ones(2, 3, 4)).item() == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="Q>=2"):
        query_diversity(torch.ones(2, 1, 4))


def test_gradient_steps_on_the_regulariser_lower_query_similarity():
    g = torch.Generator().manual_seed(1)
    shared = torch.randn(1, 1, 16, generator=g)
    queries = (shared + 0.1 * torch.randn(2, 6, 16, generator=g)).requires_grad_()  # nearly collapsed
    before_collapse, before = query_collapse(queries), query_diversity(queries).item()
    opt = torch.optim.Adam([queries], lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        query_diversity(queries).backward()
        opt.step()
    assert before_collapse > 0.9
    assert query_diversity(queries).item() < 0.5 * before
    assert query_collapse(queries) < before_collapse - 0.2


def test_uncertainty_weighting_formula_and_gradients():
    weighting = UncertaintyWeighting({"vtc": 1.0, "vtm": 1.0, "vtg": 2.0})
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([0.0, 0.5, -1.0]))
    losses = {"vtc": torch.tensor(2.0), "vtm": torch.tensor(0.7), "vtg": torch.tensor(3.0)}
    total, logs = weighting(losses)
    expected = 2.0 + (math.exp(-0.5) * 0.7 + 0.5) + 2.0 * (math.exp(1.0) * 3.0 - 1.0)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert logs["weight_vtg"].item() == pytest.approx(2.0 * math.exp(1.0), rel=1e-6)
    total.backward()
    # d/ds_i w_i (exp(-s_i) L_i + s_i) = w_i (1 - exp(-s_i) L_i)
    grad = torch.tensor([1 - 2.0, 1 - math.exp(-0.5) * 0.7, 2.0 * (1 - math.exp(1.0) * 3.0)])
    assert torch.allclose(weighting.log_vars.grad, grad, atol=1e-6)
    with pytest.raises(KeyError, match="vtm"):
        weighting({"vtc": torch.tensor(1.0)})


def test_uncertainty_weighting_keeps_the_configured_ratios_at_its_optimum():
    weighting = UncertaintyWeighting({"vtc": 1.0, "vtm": 0.0, "vtg": 2.0})
    assert weighting.names == ("vtc", "vtg")
    losses = {"vtc": torch.tensor(0.5), "vtg": torch.tensor(4.0)}
    opt = torch.optim.SGD(weighting.parameters(), lr=0.1)
    for _ in range(500):
        opt.zero_grad()
        weighting(losses)[0].backward()
        opt.step()
    _, logs = weighting(losses)
    # at the optimum exp(-s_i) = 1 / L_i, so the effective weights are w_i / L_i
    assert logs["weight_vtc"].item() == pytest.approx(1.0 / 0.5, rel=1e-3)
    assert logs["weight_vtg"].item() == pytest.approx(2.0 / 4.0, rel=1e-3)
    with pytest.raises(ValueError, match="positive weight"):
        UncertaintyWeighting({"vtc": 0.0})


def stage1_step(tokenizer, config: ObjectivesConfig):
    torch.manual_seed(0)
    model_config = ModelConfig(variant="spatiotemporal", preset="tiny", use_audio=False, objectives=config)
    model = VideoLanguageModel(model_config, tokenizer, encoders=False).eval()  # eval: no dropout
    loss = Stage1Loss(config)
    g = torch.Generator().manual_seed(2)
    batch = {"frame_features": torch.randn(4, 3, 10, PRESETS["tiny"].vision_width, generator=g),
             "frame_mask": torch.ones(4, 3, dtype=torch.bool), "text_ids": torch.randint(5, 90, (4, 6), generator=g),
             "text_mask": torch.ones(4, 6, dtype=torch.bool), "video_id": torch.arange(4)}
    out = loss(model, batch, generator=g)
    return loss, model.encode(batch), out


def test_stage1_is_unchanged_with_the_kit_off_and_adds_it_when_on(synthetic_dir):
    tokenizer = load_tokenizer(synthetic_dir)
    _, vt, plain = stage1_step(tokenizer, ObjectivesConfig(embed_dim=16))
    logs = plain["logs"]
    assert plain["loss"].item() == pytest.approx((logs["vtc"] + logs["vtm"] + logs["vtg"]).item(), rel=1e-6)
    assert "query_diversity" not in logs and not any(k.startswith("weight_") for k in logs)

    _, _, regularised = stage1_step(tokenizer, ObjectivesConfig(embed_dim=16, query_diversity_weight=0.5))
    div = query_diversity(vt.contrastive_tokens)
    assert regularised["logs"]["query_diversity"].item() == pytest.approx(div.item(), rel=1e-5)
    assert regularised["loss"].item() == pytest.approx(plain["loss"].item() + 0.5 * div.item(), rel=1e-5)

    objectives, _, adaptive = stage1_step(tokenizer, ObjectivesConfig(embed_dim=16, adaptive_weighting=True,
                                                                     vtm_weight=0, vtg_weight=2.0))
    assert objectives.uncertainty.names == ("vtc", "vtg")  # a loss switched off is not weighted
    assert adaptive["loss"].item() == pytest.approx(plain["logs"]["vtc"].item() + 2 * plain["logs"]["vtg"].item(),
                                                    rel=1e-5)  # s = 0 at the start: the configured weighted sum
    adaptive["loss"].backward()
    assert objectives.uncertainty.log_vars.grad is not None
    assert (objectives.uncertainty.log_vars.grad != 0).all()
