"""load_pretrained beyond parity: shards, dtypes (the Q-Former stays fp32), missing weights named by path,
this project's own checkpoints, and what it refuses."""
import json

import pytest
import torch

import _hf_tiny as H
from videoqf.pretrained import load_pretrained


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A tiny InstructBLIP + T5 folder in several safetensors shards."""
    folder = tmp_path_factory.mktemp("sharded")
    model, _ = H.build("instructblip-t5", folder)
    for f in folder.glob("model*.safetensors*"):
        f.unlink()
    model.save_pretrained(folder, max_shard_size="1MB")
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    return folder


def batch():
    frames = torch.randn(2, 1, 3, H.IMAGE_SIZE, H.IMAGE_SIZE)
    return {"frames": frames, "frame_mask": torch.ones(2, 1, dtype=torch.bool)}


def test_shards_load_and_bf16_keeps_the_qformer_fp32(sharded):
    fp32 = load_pretrained(sharded)
    bf16 = load_pretrained(sharded, dtype="bf16")
    assert bf16.vision.dtype == torch.bfloat16 and bf16.bridge.llm.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in [*bf16.backend.parameters(), *bf16.bridge.projector.parameters()])
    x = batch()
    with torch.no_grad():
        a = fp32.encode_for_llm(x, ["what is this ?"] * 2).tokens
        b = bf16.encode_for_llm(x, ["what is this ?"] * 2).tokens
    assert a.dtype == b.dtype == torch.float32 and (a - b).abs().max() < 0.1  # bf16 features, fp32 head
    assert len(bf16.caption(x, ["what is this ?"] * 2, max_new_tokens=3, min_new_tokens=3)) == 2


def test_a_missing_shard_is_named(sharded, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in sharded.iterdir():
        if f.is_file():
            (broken / f.name).write_bytes(f.read_bytes())
    (broken / "qformer_tokenizer").symlink_to(sharded / "qformer_tokenizer")
    shard = sorted(broken.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=str(shard)):
        load_pretrained(broken)


def test_refuses_unknown_folders_and_backends(sharded, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_pretrained(tmp_path / "nothing")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(FileNotFoundError):
        load_pretrained(other)
    with pytest.raises(ValueError, match="variant='cascade'"):
        load_pretrained(sharded, variant="cascade")
    with pytest.raises(ValueError, match="dtype"):
        load_pretrained(sharded, dtype="int8")
