"""FrozenVisionEncoder: shapes, block selection against timm run by hand, frozenness, chunking, weights."""
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from videoqf.encoders.config import VisionEncoderConfig
from videoqf.encoders.vision import FrozenVisionEncoder

NAME = "vit_tiny_patch16_224"
SIZE = 64  # 4x4 patches + class token keeps the tests fast


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A seeded full timm model and its weights saved as safetensors."""
    torch.manual_seed(0)
    model = timm.create_model(NAME, pretrained=False, num_classes=0, img_size=SIZE).eval()
    path = tmp_path_factory.mktemp("weights") / "vit.safetensors"
    save_file(model.state_dict(), str(path))
    return model, path


def make(path, **kw):
    return FrozenVisionEncoder(VisionEncoderConfig(model_name=NAME, weights=str(path), image_size=SIZE, **kw))


def frames(b, t, seed=1):
    return torch.randn(b, t, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def by_hand(model, images, num_blocks):
    """timm's ViT run block by block up to (and including) block num_blocks - 1, without final norm."""
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(images))))
    for block in model.blocks[:num_blocks]:
        x = block(x)
    return x


@pytest.mark.parametrize("t", [1, 8])
def test_shapes(reference, t):
    enc = make(reference[1])
    out = enc(frames(2, t))
    assert out.shape == (2, t, 17, 192)
    assert (enc.num_tokens, enc.output_dim) == (17, 192)
    assert out.dtype == torch.float32


def test_block_selection_matches_timm_by_hand(reference):
    model, path = reference
    x = frames(1, 3)
    second_last, last = make(path, block_index=-2), make(path, block_index=-1)
    assert len(second_last.model.blocks) == 11  # the unused last block is not even kept
    with torch.no_grad():
        want_second_last = by_hand(model, x[0], 11)
        want_last = by_hand(model, x[0], 12)
    torch.testing.assert_close(second_last(x)[0], want_second_last, rtol=0, atol=1e-5)
    torch.testing.assert_close(last(x)[0], want_last, rtol=0, atol=1e-5)
    assert (want_last - want_second_last).abs().max() > 1e-2


def test_frozen_really_frozen(reference):
    enc = make(reference[1])
    parent = nn.ModuleDict(dict(encoder=enc, head=nn.Linear(192, 4)))
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    head_before = parent["head"].weight.clone()
    optim = torch.optim.AdamW(parent.parameters(), lr=0.1, weight_decay=0.1)
    parent.train()
    assert not any(m.training for m in enc.modules())
    loss = parent["head"](enc(frames(2, 2)).mean(dim=(1, 2))).pow(2).sum()
    loss.backward()
    optim.step()
    assert all(p.grad is None and not p.requires_grad for p in enc.parameters())
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(parent["head"].weight, head_before)


def test_chunked_equals_unchunked(reference):
    x = frames(2, 5)
    full = make(reference[1], chunk_size=64)(x)
    chunked = make(reference[1], chunk_size=3)(x)
    assert (full - chunked).abs().max() <= 1e-6


def test_state_dict_file_and_safetensors_agree(reference, tmp_path):
    model, path = reference
    pt = tmp_path / "vit.pt"
    torch.save({"state_dict": model.state_dict()}, pt)
    x = frames(1, 2)
    torch.testing.assert_close(make(pt)(x), make(path)(x), rtol=0, atol=0)
    assert make(pt).weight_hash() == make(path).weight_hash()


def test_hf_cache_folder_is_resolved(reference, tmp_path):
    repo = tmp_path / "models--timm--vit_tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123\n")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "model.safetensors").write_bytes(reference[1].read_bytes())
    x = frames(1, 1)
    torch.testing.assert_close(make(repo)(x), make(reference[1])(x), rtol=0, atol=0)


def test_missing_weight_file_names_path(tmp_path):
    missing = tmp_path / "nowhere" / "eva.safetensors"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        make(missing)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        make(tmp_path)


def test_no_weights_needs_allow_random():
    with pytest.raises(ValueError, match="allow_random"):
        FrozenVisionEncoder(VisionEncoderConfig(model_name=NAME))
    enc = FrozenVisionEncoder(VisionEncoderConfig(model_name=NAME, allow_random=True, image_size=SIZE))
    assert enc(frames(1, 1)).shape == (1, 1, 17, 192)


def test_strict_loading_lists_bad_keys(reference, tmp_path):
    state = dict(reference[0].state_dict())
    state["bogus.weight"] = torch.zeros(1)
    del state["cls_token"]
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"missing keys \(1\): cls_token.*unexpected keys \(1\): bogus.weight"):
        make(path)


def test_weight_hash_tracks_weights(reference):
    enc = make(reference[1])
    other = FrozenVisionEncoder(VisionEncoderConfig(model_name=NAME, allow_random=True, image_size=SIZE))
    assert enc.weight_hash() == make(reference[1]).weight_hash() != other.weight_hash()


def test_data_config_and_dtype(reference):
    enc = make(reference[1], dtype="bfloat16")
    assert enc.data_config == dict(image_size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert enc(frames(1, 1)).dtype == torch.bfloat16
