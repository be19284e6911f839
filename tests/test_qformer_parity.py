"""Numeric parity of videoqf's QFormer with transformers' Blip2QFormerModel, and LAVIS key round-trips."""
import pytest
import torch
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from videoqf.qformer import QFormer, QFormerConfig, load_lavis_state_dict, to_lavis_state_dict


def tiny_hf(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = Blip2QFormerConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
        cross_attention_frequency=2, encoder_hidden_size=48, attn_implementation="sdpa", **kw,
    )
    model = Blip2QFormerModel(cfg).eval()
    # Non-trivial LayerNorms and biases, so a mix-up of any two tensors shows in the outputs.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("padded", [False, True])
def test_query_outputs_match_transformers(padded):
    hf = tiny_hf()
    queries = torch.randn(1, 6, 64) * 0.5
    ours = QFormer.from_hf_blip2(hf, query_tokens=queries).eval()
    enc = torch.randn(3, 10, 48)
    mask = torch.ones(3, 10, dtype=torch.long)
    if padded:
        mask[0, 7:] = 0
        mask[2, 3:] = 0
        enc[0, 7:] = 100.0  # padded tokens must not matter to either implementation
    with torch.no_grad():
        ref = hf(query_embeds=queries.expand(3, -1, -1), encoder_hidden_states=enc,
                 encoder_attention_mask=mask).last_hidden_state
        got = ours(enc, mask.bool()).query_output
    assert got.shape == (3, 6, 64)
    assert (got - ref).abs().max().item() < 1e-5


def test_padding_changes_nothing_but_padding():
    hf = tiny_hf()
    ours = QFormer.from_hf_blip2(hf, query_tokens=torch.randn(1, 6, 64)).eval()
    enc = torch.randn(1, 10, 48)
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[0, 6:] = False
    with torch.no_grad():
        full = ours(enc[:, :6]).query_output
        padded = ours(enc, mask).query_output
        changed = ours(torch.cat([enc[:, :6], torch.randn(1, 4, 48)], 1), mask).query_output
    assert torch.allclose(full, padded, atol=1e-6)
    assert torch.allclose(padded, changed, atol=1e-6)
    assert not torch.allclose(ours(enc).query_output, padded, atol=1e-3)


def test_import_rejects_missing_and_mismatched_keys():
    hf = tiny_hf()
    state = hf.state_dict()
    cfg = QFormer.from_hf_blip2(hf, query_tokens=torch.randn(1, 6, 64)).config
    broken = dict(state)
    broken.pop("encoder.layer.1.attention.output.dense.weight")
    with pytest.raises(KeyError, match="encoder.layer.1.attention.output.dense.weight"):
        QFormer.from_hf_blip2(broken, config=cfg, query_tokens=torch.randn(1, 6, 64))
    with pytest.raises(KeyError, match="query_tokens"):
        QFormer.from_hf_blip2(state, config=cfg)
    wrong = dict(state)
    wrong["encoder.layer.0.crossattention.attention.key.weight"] = torch.zeros(64, 40)
    with pytest.raises(ValueError, match="cross_kv.weight"):
        QFormer.from_hf_blip2(wrong, config=cfg, query_tokens=torch.randn(1, 6, 64))


def tiny_config(**kw):
    base = dict(hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128, cross_attention_frequency=2,
                encoder_width=48, num_queries=6, vocab_size=50, max_text_len=16)
    return QFormerConfig(**{**base, **kw})


def test_lavis_round_trip_is_lossless():
    torch.manual_seed(1)
    src = QFormer(tiny_config())
    lavis = to_lavis_state_dict(src)
    assert "Qformer.bert.encoder.layer.0.crossattention.self.key.weight" in lavis
    assert "Qformer.bert.encoder.layer.1.intermediate_query.dense.weight" in lavis
    assert "Qformer.cls.predictions.decoder.weight" in lavis
    extras = {"vision_proj.weight": torch.randn(8, 64), "temp": torch.tensor(0.07)}
    dst = QFormer(tiny_config())
    rest = load_lavis_state_dict(dst, {**lavis, **extras})
    assert set(rest) == set(extras)
    again = to_lavis_state_dict(dst)
    assert set(again) == set(lavis)
    assert all(torch.equal(again[k], lavis[k]) for k in lavis)
    for (n, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert torch.equal(a, b), n


def test_lavis_import_lists_missing_keys():
    lavis = to_lavis_state_dict(QFormer(tiny_config()))
    del lavis["Qformer.bert.encoder.layer.2.output_query.LayerNorm.bias"]
    lavis["Qformer.bert.encoder.layer.9.output.dense.weight"] = torch.zeros(1)
    with pytest.raises(KeyError, match="output_query.LayerNorm.bias"):
        load_lavis_state_dict(QFormer(tiny_config()), lavis)


def test_blip2_size_parameter_count_equals_transformers():
    cfg = Blip2QFormerConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                             intermediate_size=3072, cross_attention_frequency=2, encoder_hidden_size=1408)
    with torch.device("meta"):
        hf = Blip2QFormerModel(cfg)
        ours = QFormer(QFormerConfig())
    hf_count = sum(p.numel() for p in hf.parameters())
    assert ours.num_parameters("query_path") == hf_count
    assert ours.num_parameters("queries") == 32 * 768
    text = ours.num_parameters("text_branch")
    # word (30523) + position (512) embeddings, 12 text FFNs, LM head transform + bias (decoder tied)
    expected_text = (30523 + 512) * 768 + 12 * (768 * 3072 + 3072 + 3072 * 768 + 768 + 2 * 768) \
        + (768 * 768 + 768 + 2 * 768) + 30523
    assert text == expected_text
    assert ours.num_parameters("all") == hf_count + 32 * 768 + expected_text
