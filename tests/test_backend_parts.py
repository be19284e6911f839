"""The parts inside the backends: expert routing, attentive pooling, position embedding, audio branch."""
import pytest
import torch

from videoqf.backends import backend_config, build_backend
from videoqf.modules.pooling import AttentivePooling, spatial_pool
from videoqf.modules.position import TemporalPositionEmbedding
from _tiny import audio, frames, text, tiny


@pytest.mark.parametrize("expert,moved", [("spatial", [0, 1]), ("temporal", [2, 3]), ("semantic", [4, 5])])
def test_perturbing_one_expert_moves_only_its_tokens_in_that_layer(expert, moved):
    backend = tiny("spatiotemporal").eval()  # groups [2, 2, 2]; text shares the semantic expert
    layer = backend.head.layers[0]
    feats, mask = frames(2, 3), torch.ones(2, 3, dtype=torch.bool)
    ids, text_mask = text(2)
    seen = []
    layer.register_forward_hook(lambda module, args, out: seen.append(out[0].detach()))
    with torch.no_grad():
        before = backend(feats, mask, text_ids=ids, text_mask=text_mask).tokens  # [queries; instruction]
        layer.ffn.experts[expert].up.weight.add_(torch.randn_like(layer.ffn.experts[expert].up.weight))
        after = backend(feats, mask, text_ids=ids, text_mask=text_mask).tokens
    changed = (seen[0] - seen[1]).abs().amax(dim=(0, 2)) > 1e-6  # per position: 6 queries, then text
    expected = [i in moved for i in range(6)] + [expert == "semantic"] * ids.shape[1]
    assert changed.tolist() == expected
    assert not torch.allclose(before, after, atol=1e-4)  # later layers mix it into every token


def test_experts_switch_gives_blip2_routing():
    with_experts = tiny("spatiotemporal").head.layers[0].ffn
    without = tiny("spatiotemporal", experts=False).head.layers[0].ffn
    assert set(with_experts.experts) == {"spatial", "temporal", "semantic"} and with_experts.text_expert == "semantic"
    assert set(without.experts) == {"query", "text"}


def test_attentive_pooling_weights_respond_to_content():
    torch.manual_seed(0)
    pool = AttentivePooling(dim=8, hidden=16)
    same = torch.randn(1, 1, 5, 8).expand(2, 6, 5, 8).clone()
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    tokens, weights = pool(same, mask)
    assert torch.allclose(weights[0], torch.full((6,), 1 / 6))
    assert torch.allclose(weights[1], torch.tensor([0.25] * 4 + [0.0] * 2))
    assert torch.allclose(tokens[0], same[0], atol=1e-6)  # uniform weights leave tokens as they were
    assert (tokens[1, 4:] == 0).all()
    odd = same.clone()
    odd[:, 2] = torch.randn(5, 8) * 3
    _, odd_weights = pool(odd, mask)
    others = odd_weights[0, [0, 1, 3, 4, 5]]
    assert abs(odd_weights[0, 2] - 1 / 6) > 1e-3 and torch.allclose(others, others[:1].expand(5))
    assert torch.allclose(odd_weights.sum(1), torch.ones(2))


def test_attentive_pooling_by_segments_shares_weights_within_a_segment():
    torch.manual_seed(0)
    pool = AttentivePooling(dim=8, hidden=16, segment_frames=2)
    _, weights = pool(torch.randn(1, 5, 3, 8), torch.ones(1, 5, dtype=torch.bool))
    assert weights[0, 0] == weights[0, 1] and weights[0, 2] == weights[0, 3] and weights[0, 0] != weights[0, 2]
    assert torch.allclose(weights[0, [0, 2, 4]].sum(), torch.tensor(1.0))


def test_spatial_pool_keeps_cls_and_averages_patch_blocks():
    x = torch.randn(2, 3, 17, 4)  # [CLS] + 4x4 patches
    out = spatial_pool(x, 4)
    assert out.shape == (2, 3, 5, 4) and torch.equal(out[:, :, 0], x[:, :, 0])
    grid = x[:, :, 1:].reshape(2, 3, 4, 4, 4)
    assert torch.allclose(out[:, :, 1], grid[:, :, :2, :2].mean(dim=(2, 3)), atol=1e-6)
    assert spatial_pool(x, 0) is x
    with pytest.raises(ValueError, match="square"):
        spatial_pool(x, 3)


def test_position_embedding_uses_rows_then_stretches_past_its_table():
    pe = TemporalPositionEmbedding(num_positions=4, dim=3)
    short = pe(torch.ones(1, 3, dtype=torch.bool))
    assert torch.equal(short[0], pe.table[:3].detach())
    long = pe(torch.ones(1, 7, dtype=torch.bool))[0]  # positions 0, 0.5, 1, ..., 3
    assert torch.allclose(long[0], pe.table[0]) and torch.allclose(long[6], pe.table[3])
    assert torch.allclose(long[1], (pe.table[0] + pe.table[1]) / 2)
    padded = pe(torch.tensor([[True] * 7 + [False] * 3]))[0]
    assert torch.allclose(padded[:7], long)  # padding never moves the real frames
    (padded * torch.arange(30.0).view(1, 10, 3)).sum().backward()  # the table's gradient: each row's share
    share = torch.tensor([1, 0.5, 0, 0, 0, 0, 0])[:, None] * torch.arange(21.0).view(7, 3)
    assert torch.allclose(pe.table.grad[0], share.sum(0))
    # unit scale, as the LayerNorm-ed query outputs it is added to (nn.Embedding's init, Video-LLaMA's)
    assert 0.9 < TemporalPositionEmbedding(num_positions=32, dim=64).table.std().item() < 1.1


def test_audio_branch_masks_a_missing_track_and_changes_tokens_when_present():
    backend = tiny("cascaded").eval()
    q, qa = backend.config.video_qformer.num_queries, backend.config.audio_qformer.num_queries
    feats, mask = frames(2, 4), torch.ones(2, 4, dtype=torch.bool)
    sound = audio(2)
    no_track = torch.tensor([[True, True, False], [False, False, False]])
    with torch.no_grad():
        video_only = backend(feats, mask)
        with_audio = backend(feats, mask, audio_tokens=sound, audio_mask=no_track)
        other = backend(feats, mask, audio_tokens=sound * -1, audio_mask=no_track)
    assert video_only.tokens.shape[1] == q and video_only.mask.all()
    assert with_audio.tokens.shape[1] == q + qa
    assert with_audio.mask.tolist() == [[True] * (q + qa), [True] * q + [False] * qa]
    assert torch.allclose(with_audio.tokens[:, :q], video_only.tokens, atol=1e-6)
    assert (with_audio.tokens[1, q:] == 0).all()
    assert not torch.allclose(with_audio.tokens[0, q:], other.tokens[0, q:], atol=1e-4)
    off = build_backend("cascaded", backend_config("cascaded", {"audio": False}, preset="tiny"))
    assert off.audio_branch is None
    assert off(feats, mask, audio_tokens=sound).tokens.shape[1] == q == off.num_output_tokens(4, audio=True)
