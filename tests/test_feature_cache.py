"""Feature cache: keys, round trip, resume, refusal of a stale cache, and a writer killed mid-run."""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from videoqf.data.feature_cache import (
    CacheSpec,
    CacheSpecMismatch,
    FeatureCache,
    FeatureCacheWriter,
    cache_key,
)
from videoqf.encoders.config import VisionEncoderConfig
from videoqf.encoders.vision import FrozenVisionEncoder

SPEC = CacheSpec(
    vision_encoder="vit_tiny_patch16_224",
    vision_weights_hash="ab" * 32,
    vision_block_index=10,
    image_size=224,
    dtype="float32",
    sampler="uniform",
    sampler_seed=0,
    num_frames=4,
)


def clip(i):
    g = torch.Generator().manual_seed(i)
    return {
        "vision": torch.randn(4, 5, 8, generator=g).to(torch.bfloat16),
        "frame_mask": torch.tensor([True, True, i % 2 == 0, False]),
        "audio": torch.full((2, 3), float(i)),
    }


def assert_clip_equal(got, i):
    want = clip(i)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), name


def test_cache_key_is_stable_and_discriminating():
    key = cache_key("videos/a.mp4", (1.0, 3.5), "uniform", 0, 8)
    assert key == cache_key("videos/a.mp4", (1.0004, 3.5), "uniform", 0, 8)  # window kept to the ms
    # must not change across versions: caches rely on it (it changed once, when keys took in the file's size
    # and modification time)
    assert key == "99e8000464747332009a20c6e514c907"
    others = [
        cache_key("videos/b.mp4", (1.0, 3.5), "uniform", 0, 8),
        cache_key("videos/a.mp4", None, "uniform", 0, 8),
        cache_key("videos/a.mp4", (1.0, 3.6), "uniform", 0, 8),
        cache_key("videos/a.mp4", (1.0, 3.5), "random_segment", 0, 8),
        cache_key("videos/a.mp4", (1.0, 3.5), "uniform", 1, 8),
        cache_key("videos/a.mp4", (1.0, 3.5), "uniform", 0, 16),
    ]
    assert len({key, *others}) == 7


def test_round_trip(tmp_path):
    with FeatureCacheWriter(tmp_path, SPEC, shard_size=2) as writer:
        for i in range(5):
            writer.add(f"k{i}", clip(i))
        with pytest.raises(ValueError, match="already"):
            writer.add("k0", clip(0))
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == [f"shard-0000{i}.safetensors" for i in range(3)]
    cache = FeatureCache(tmp_path, SPEC)
    assert len(cache) == 5 and "k4" in cache and "k5" not in cache
    for i in range(5):
        assert_clip_equal(cache.get(f"k{i}"), i)
    with pytest.raises(KeyError, match="k9"):
        cache.get("k9")


def test_resume_skips_done_keys(tmp_path):
    with FeatureCacheWriter(tmp_path, SPEC, shard_size=2) as writer:
        for i in range(3):
            writer.add(f"k{i}", clip(i))
    writer = FeatureCacheWriter(tmp_path, SPEC, shard_size=2)
    assert [writer.has(f"k{i}") for i in range(5)] == [True, True, True, False, False]
    for i in range(3, 5):
        writer.add(f"k{i}", clip(i))
    writer.close()
    cache = FeatureCache(tmp_path, SPEC)
    assert sorted(cache.keys()) == [f"k{i}" for i in range(5)]
    assert_clip_equal(cache.get("k4"), 4)


def test_one_writer_at_a_time(tmp_path):
    with FeatureCacheWriter(tmp_path, SPEC):
        with pytest.raises(RuntimeError, match="another FeatureCacheWriter"):
            FeatureCacheWriter(tmp_path, SPEC)


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(vision_weights_hash="cd" * 32), "vision_weights_hash"),
        (dict(vision_encoder="eva_giant_patch14_224"), "vision_encoder"),
        (dict(sampler="fps"), "sampler"),
        (dict(sampler_seed=7), "sampler_seed"),
        (dict(audio_encoder="vit_tiny_patch16_224"), "audio_encoder"),
    ],
)
def test_stale_cache_is_refused(tmp_path, changes, field):
    with FeatureCacheWriter(tmp_path, SPEC) as writer:
        writer.add("k0", clip(0))
    other = dataclasses.replace(SPEC, **changes)
    with pytest.raises(CacheSpecMismatch, match=f"{field}: cache has .*, expected {changes[field]!r}"):
        FeatureCache(tmp_path, other)
    with pytest.raises(CacheSpecMismatch, match=field):
        FeatureCacheWriter(tmp_path, other)


def test_missing_cache_names_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "none")):
        FeatureCache(tmp_path / "none", SPEC)


def test_spec_from_encoders():
    torch.manual_seed(0)
    enc = FrozenVisionEncoder(VisionEncoderConfig(allow_random=True, image_size=32, block_index=-2))
    spec = CacheSpec.from_encoders(enc, sampler="uniform", sampler_seed=3, num_frames=8)
    assert (spec.vision_block_index, spec.image_size, spec.dtype) == (10, 32, "float32")
    assert spec.vision_weights_hash == enc.weight_hash() and spec.audio_encoder is None


TESTS = Path(__file__).resolve().parent
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from test_feature_cache import SPEC, clip
    from videoqf.data.feature_cache import FeatureCacheWriter

    out_dir, kill_at = sys.argv[1], sys.argv[2]
    real_replace, index_writes = os.replace, []

    def replace(src, dst):
        name = os.path.basename(dst)
        index_writes.extend([1] if name == "index.json" else [])
        if name == kill_at or (kill_at == "second-index" and name == "index.json" and len(index_writes) == 2):
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    os.replace = replace
    writer = FeatureCacheWriter(out_dir, SPEC, shard_size=2)
    for i in range(6):
        writer.add(f"k{i}", clip(i))
    writer.close()
    """
)


@pytest.mark.parametrize("kill_at", ["shard-00001.safetensors", "second-index"])
def test_killed_writer_leaves_valid_cache_and_resumes(tmp_path, kill_at):
    """SIGKILL while the second shard is written (before its rename), or after its rename but before the
    index names it: either way the cache holds exactly the first shard, and a resumed run completes it."""
    out = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), kill_at],
        env={**os.environ, "PYTHONPATH": f"{TESTS}:{TESTS.parent}"},
        capture_output=True,
    )
    assert proc.returncode == -9, proc.stderr.decode()
    cache = FeatureCache(out, SPEC)
    assert sorted(cache.keys()) == ["k0", "k1"]
    assert_clip_equal(cache.get("k1"), 1)
    assert json.loads((out / "index.json").read_text())["shards"].keys() == {"shard-00000.safetensors"}

    writer = FeatureCacheWriter(out, SPEC, shard_size=2)
    todo = [f"k{i}" for i in range(6) if not writer.has(f"k{i}")]
    assert todo == ["k2", "k3", "k4", "k5"]
    for key in todo:
        writer.add(key, clip(int(key[1:])))
    writer.close()
    assert not list(out.glob(".*.tmp"))
    cache = FeatureCache(out, SPEC)
    assert len(cache) == 6
    for i in range(6):
        assert_clip_equal(cache.get(f"k{i}"), i)
