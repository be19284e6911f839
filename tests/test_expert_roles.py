"""The spatio-temporal head's experts have roles by what their queries read: only the timed groups' cross-attention
reads the frames' time embedding (``QFormerConfig.timed_groups``); the spatial group reads the frames as an
unordered set."""
import pytest
import torch

from _tiny import frames, tiny
from videoqf.backends import backend_config
from videoqf.qformer import QFormer, QFormerConfig

GROUPS = dict(query_experts=["spatial", "temporal", "semantic"], query_group_sizes=[2, 3, 1], text_expert="semantic")
SIZES = dict(hidden_size=32, num_heads=4, intermediate_size=48, encoder_width=24, num_queries=6, vocab_size=50,
             initializer_range=0.3)
TEMPORAL = slice(2, 5)


def qformers(num_layers: int) -> tuple[QFormer, QFormer]:
    """(the head with a timed group, the same weights without one)."""
    torch.manual_seed(0)
    timed = QFormer(QFormerConfig(num_layers=num_layers, cross_attention_frequency=1, timed_groups=["temporal"],
                                  **GROUPS, **SIZES)).eval()
    plain = QFormer(QFormerConfig(num_layers=num_layers, cross_attention_frequency=1, **GROUPS, **SIZES)).eval()
    plain.load_state_dict(timed.state_dict())
    return timed, plain


def inputs(batch=3, num_frames=4, per_frame=5):
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(batch, num_frames * per_frame, SIZES["encoder_width"], generator=g)
    time = torch.randn(batch, num_frames, SIZES["encoder_width"], generator=g)
    return tokens, time, time.repeat_interleave(per_frame, dim=1)


@pytest.mark.parametrize("reuse", [True, False])
def test_only_the_timed_group_reads_time(reuse):
    """One layer (self-attention comes before cross-attention): the temporal rows are a plain Q-Former's over the
    tokens with time added, every other row a plain Q-Former's over the tokens alone."""
    timed, plain = qformers(num_layers=1)
    tokens, time, per_token = inputs()
    with torch.no_grad():
        out = timed(context=timed.encode_context(tokens, reuse=reuse, time=time)).query_output
        without, with_time = plain(tokens).query_output, plain(tokens + per_token).query_output
    assert torch.allclose(out[:, TEMPORAL], with_time[:, TEMPORAL], atol=1e-5)
    assert torch.allclose(out[:, :2], without[:, :2], atol=1e-5) and torch.allclose(out[:, 5:], without[:, 5:],
                                                                                    atol=1e-5)
    assert (with_time - without).abs().amax() > 0.05, "the time embedding should change what it is added to"


def test_time_survives_selecting_rows_and_folding():
    timed, _ = qformers(num_layers=3)
    tokens, time, _ = inputs(batch=4)
    index = torch.tensor([2, 0, 2])
    with torch.no_grad():
        selected = timed(context=timed.encode_context(tokens, time=time).select(index)).query_output
        fresh = timed(context=timed.encode_context(tokens[index], reuse=False, time=time[index])).query_output
    assert torch.allclose(selected, fresh, atol=1e-5)


def test_a_time_embedding_needs_timed_groups_next_to_each_other():
    _, plain = qformers(num_layers=1)
    tokens, time, _ = inputs()
    with pytest.raises(ValueError, match="timed_groups"):
        plain.encode_context(tokens, time=time)
    with pytest.raises(ValueError, match=r"\['time'\] are none"):
        QFormerConfig(timed_groups=["time"], **GROUPS, **SIZES)
    with pytest.raises(ValueError, match="next to each other"):
        QFormerConfig(timed_groups=["spatial", "semantic"], **GROUPS, **SIZES)
    assert QFormerConfig(timed_groups=["semantic", "temporal"], **GROUPS, **SIZES).timed_queries == slice(2, 6)
    with pytest.raises(ValueError, match="timed_experts"):
        backend_config("spatiotemporal", {"timed_experts": ["time"]}, preset="tiny")
    every = backend_config("spatiotemporal", {"timed_experts": ["spatial", "temporal", "semantic"]}, preset="tiny")
    assert every.head_config.timed_groups == []  # every query reads time: it is added to the tokens once


@pytest.mark.parametrize("timed", [["temporal"], ["temporal", "semantic"]])
def test_in_the_backend_only_timed_queries_read_order(timed):
    """One head layer: reversing the frames moves only the timed queries; the position embedding reaches no
    other group (in deeper heads self-attention may carry order on, which the expert probe measures)."""
    backend = tiny("spatiotemporal", qformer={"num_layers": 1, "cross_attention_frequency": 1,
                                              "initializer_range": 0.3}, timed_experts=timed).eval()
    with torch.no_grad():
        backend.frame_position.table.normal_()
    groups = backend.config.group_sizes
    temporal = slice(groups[0], groups[0] + groups[1] + (groups[2] if "semantic" in timed else 0))
    feats, mask = frames(2, 5), torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        forward, backward = backend(feats, mask).tokens, backend(feats.flip(1), mask).tokens
    others = torch.cat([forward[:, :temporal.start] - backward[:, :temporal.start],
                        forward[:, temporal.stop:] - backward[:, temporal.stop:]], dim=1)
    assert others.abs().amax() < 1e-5
    assert (forward[:, temporal] - backward[:, temporal]).abs().amax() > 0.05
