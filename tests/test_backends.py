"""Every registered backend, tiny size: shapes, masking, gradients, temporal order, registry."""
import pytest
import torch

from _tiny import audio, frames, text, tiny
from videoqf.backends import BACKENDS, backend_config, build_backend, register_backend
from videoqf.backends.base import VideoBackend

NAMES = sorted(BACKENDS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("num_frames", [1, 4, 8, 32])
def test_shapes_and_backward(name, num_frames):
    backend = tiny(name).train()
    mask = torch.ones(3, num_frames, dtype=torch.bool)
    mask[1, (num_frames + 1) // 2 :] = False  # variable lengths
    mask[2, 0] = num_frames == 1  # a hole at the start (unless it is the only frame)
    vt = backend(frames(3, num_frames), mask, audio_tokens=audio(3))
    m = backend.num_output_tokens(num_frames, audio=True)
    assert vt.tokens.shape == (3, m, backend.hidden_size)
    assert vt.mask.shape == (3, m) and vt.mask.dtype == torch.bool
    assert vt.head_queries <= m and vt.context.batch_size == 3
    assert torch.isfinite(vt.tokens).all()
    (vt.tokens * vt.mask[..., None]).square().mean().backward()
    grads = [p.grad for p in backend.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", NAMES)
def test_padded_frames_change_no_output(name):
    backend = tiny(name).eval()
    feats, mask = frames(2, 4), torch.ones(2, 4, dtype=torch.bool)
    mask[1, 3] = False
    padded_feats = torch.cat([feats, frames(2, 3, seed=9)], dim=1)
    padded_feats[1, 3] = frames(1, 1, seed=10)[0, 0]  # a masked frame's content changes too
    padded_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    ids, text_mask = text(2)
    sound = audio(2)
    with torch.no_grad():
        outs = [backend(f, m, audio_tokens=sound) for f, m in ((feats, mask), (padded_feats, padded_mask))]
        vtm = [backend.head(context=vt.context, text_ids=ids, text_mask=text_mask, mode="bidirectional")
               for vt in outs]
        vtg = [backend.head(context=vt.context, text_ids=ids, text_mask=text_mask, mode="causal") for vt in outs]
        instructed = [backend(f, m, text_ids=ids, text_mask=text_mask).tokens
                      for f, m in ((feats, mask), (padded_feats, padded_mask))]
    a, b = outs
    assert torch.allclose(a.tokens[a.mask], b.tokens[b.mask], atol=1e-5)
    assert torch.allclose(instructed[0][a.mask[:, : instructed[0].shape[1]]],
                          instructed[1][b.mask[:, : instructed[1].shape[1]]], atol=1e-5)
    for x, y in (vtm, vtg):
        assert torch.allclose(x.query_output, y.query_output, atol=1e-5)
        assert torch.allclose(x.text_output[text_mask], y.text_output[text_mask], atol=1e-5)
    if a.frame_weights is not None:
        assert torch.allclose(a.frame_weights, b.frame_weights[:, :4], atol=1e-6)
        assert (b.frame_weights[:, 4:] == 0).all() and b.frame_weights[1, 3] == 0


GRADIENT_CASES = [(name, {}) for name in NAMES] + [
    ("cascaded", {"pe_position": "features"}),
    ("spatiotemporal", {"experts": False, "attentive_pooling": False}),
    ("spatiotemporal", {"segment_frames": 3}),
]


@pytest.mark.parametrize("name,overrides", GRADIENT_CASES)
def test_gradients_reach_every_parameter(name, overrides):
    backend = tiny(name, **overrides).train()
    config = backend.config
    num_frames = getattr(config, "max_frames", 4)  # every position row is used
    ids, text_mask = text(2)
    g = torch.Generator().manual_seed(4)
    vt = backend(frames(2, num_frames), torch.ones(2, num_frames, dtype=torch.bool),
                 audio_tokens=audio(2, segments=getattr(config, "max_audio_segments", 1)))
    # VTG-like pass through the head's text branch; random weights so LayerNorm outputs do not sum away
    out = backend.head(context=vt.context, text_ids=ids, text_mask=text_mask, mode="causal")
    loss = (vt.tokens * torch.randn(vt.tokens.shape, generator=g)).sum() + (
        vt.contrastive_tokens * torch.randn(vt.contrastive_tokens.shape, generator=g)
    ).sum() + backend.head.lm_logits(
        out.text_output
    ).logsumexp(-1).sum()
    loss.backward()
    for n, p in backend.named_parameters():
        assert p.requires_grad, n  # a backend freezes nothing itself: stages do (videoqf.models.groups)
        assert p.grad is not None and p.grad.abs().sum() > 0, n


# At BERT's init (std 0.02) every frame's query outputs are nearly the same vector, so any frame order
# looks alike; a wider init makes frames distinguishable, as training does.
WIDE = {"initializer_range": 0.3}
DISTINCT_FRAMES = {"cascaded": {"frame_qformer": WIDE, "video_qformer": WIDE}, "spatiotemporal": {"qformer": WIDE}}


@pytest.mark.parametrize("name,overrides", [("cascaded", {}), ("cascaded", {"pe_position": "features"}),
                                            ("spatiotemporal", {})])
def test_temporal_pe_makes_order_matter(name, overrides):
    backend = tiny(name, **overrides, **DISTINCT_FRAMES[name]).eval()
    feats, mask = frames(2, 5), torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        forward, backward = backend(feats, mask).tokens, backend(feats.flip(1), mask).tokens
    assert (forward - backward).abs().amax() > 0.05


@pytest.mark.parametrize("name,overrides", [("cascaded", {"temporal_pe": False, **DISTINCT_FRAMES["cascaded"]}),
                                            ("spatiotemporal", {"temporal_pe": False}), ("meanpool", {})])
def test_without_pe_order_does_not_matter(name, overrides):
    backend = tiny(name, **overrides).eval()
    feats, mask = frames(2, 5), torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        forward, backward = backend(feats, mask).tokens, backend(feats.flip(1), mask).tokens
    assert torch.allclose(forward, backward, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_checkpointing_keeps_outputs(name):
    backend = tiny(name).train()
    feats, mask = frames(2, 3), torch.ones(2, 3, dtype=torch.bool)
    torch.manual_seed(5)
    plain = backend(feats, mask, audio_tokens=audio(2)).tokens
    backend.set_grad_checkpointing(True)
    torch.manual_seed(5)
    checkpointed = backend(feats, mask, audio_tokens=audio(2)).tokens
    assert torch.allclose(plain, checkpointed, atol=1e-6)


def test_registry_rejects_bad_names_keys_and_types():
    with pytest.raises(KeyError, match="unknown backend 'nope'"):
        build_backend("nope")
    with pytest.raises(Exception, match="bogus"):
        backend_config("cascaded", {"bogus": 1}, preset="tiny")
    with pytest.raises(TypeError, match="CascadedConfig"):
        build_backend("cascaded", backend_config("spatiotemporal", preset="tiny"))
    with pytest.raises(ValueError, match="registered twice"):
        register_backend("cascaded", config=object)(lambda c: None)


def test_overrides_reach_the_built_backend():
    overrides = {"audio": False, "video_qformer": {"num_queries": 3}}
    backend = build_backend("cascaded", backend_config("cascaded", overrides, preset="tiny"))
    assert backend.audio_branch is None and backend.head.query_tokens.shape[1] == 3
    with pytest.raises(ValueError, match="group_sizes"):
        backend_config("spatiotemporal", {"group_sizes": [1, 2]}, preset="tiny")


def test_a_new_backend_is_one_registration():
    from videoqf.backends.frames import FrameQFormerConfig
    from videoqf.backends.meanpool import MeanPoolBackend

    @register_backend("test_only_variant", config=FrameQFormerConfig)
    def variant(config):
        return MeanPoolBackend(config)

    try:
        backend = tiny("test_only_variant")
        assert isinstance(backend, VideoBackend) and "test_only_variant" in BACKENDS
    finally:
        BACKENDS.pop("test_only_variant")


def test_bad_frames_are_named():
    backend = tiny("spatiotemporal")
    with pytest.raises(ValueError, match="at least one real frame"):
        backend(frames(2, 3), torch.tensor([[True, False, False], [False, False, False]]))
    with pytest.raises(ValueError, match="wide"):
        backend(torch.randn(1, 2, 3, 7), None)


@pytest.mark.parametrize("name", ["framewise", "meanpool"])
def test_one_frame_query_cache_generates_as_the_full_pass(name):
    backend = tiny(name).eval()
    ids, text_mask = text(2)
    with torch.no_grad():
        vt = backend(frames(2, 1), None)
        cached = backend.head(text_ids=ids, text_mask=text_mask, mode="causal", past_key_values=vt.query_cache)
        full = backend.head(context=vt.context, text_ids=ids, text_mask=text_mask, mode="causal")
    assert torch.allclose(cached.text_output, full.text_output, atol=1e-5)
    assert backend(frames(2, 2), None).query_cache is None
