"""Feature cache end to end: extraction, cached training batches equal to decoded ones, kill-and-resume
of tools/extract_features.py, stale caches refused, missing clips named."""
import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from _tiny import model_config
from videoqf.data.cached import CachedFeatureDataset, collate_cached
from videoqf.data.config import DataConfig, build_dataset, cache_spec
from videoqf.data.extract import extract_features
from videoqf.data.feature_cache import CacheSpecMismatch, FeatureCache
from videoqf.data.synthetic import load_tokenizer
from videoqf.experiment import load_experiment
from videoqf.models.collate import CaptionCollate
from videoqf.models.frozen import build_frozen_encoders
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.objectives.stage1 import Stage1Loss
from videoqf.recipes import features as recipe_features
from videoqf.recipes.features import clip_overrides, ensure_features, feature_digest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def setup(synthetic_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    cfg = model_config("cascaded", tmp)
    tok = load_tokenizer(synthetic_dir)
    torch.manual_seed(0)
    model = VideoLanguageModel(cfg, tok).eval()
    data = DataConfig(annotations=f"{synthetic_dir}/train.jsonl", num_frames=4)
    spec = cache_spec(data, model.vision, model.audio)
    stats = extract_features(build_dataset(data, **clip_overrides(model.vision)), model.vision, model.audio,
                             tmp / "feats", sampler_name=spec.sampler, sampler_seed=spec.sampler_seed,
                             num_frames=spec.num_frames, batch_size=3, shard_size=2, progress=False)
    return dict(cfg=cfg, tok=tok, model=model, data=data, spec=spec, stats=stats, dir=tmp / "feats")


def stage1_loss(model, batch):
    torch.manual_seed(123)  # VTM draws its hard negatives from torch's RNG
    with torch.no_grad():
        return Stage1Loss(model.config.objectives)(model, batch)["loss"]


def test_cached_batch_gives_the_decoded_loss(setup):
    model, data, tok = setup["model"], setup["data"], setup["tok"]
    assert setup["stats"].written == setup["stats"].clips > 0
    clip = clip_overrides(model.vision)
    video = build_dataset(data, **clip)
    cached = build_dataset(replace(data, features=str(setup["dir"])), expected_spec=setup["spec"], **clip)
    assert isinstance(cached, CachedFeatureDataset)
    items = [0, 2, 3, 5]
    a = CaptionCollate(tok, 40)([video[i] for i in items])
    b = CaptionCollate(tok, 40, base=collate_cached)([cached[i] for i in items])
    assert a["caption"] == b["caption"] and b["audio_feature_mask"].any()
    assert torch.equal(a["frame_mask"], b["frame_mask"])
    loss_video, loss_cache = stage1_loss(model, a), stage1_loss(model, b)
    assert torch.isfinite(loss_video)
    torch.testing.assert_close(loss_cache, loss_video, rtol=0, atol=1e-5)


@pytest.mark.parametrize("change", ["data.num_frames", "data.sampler", "model.frozen_init_seed"])
def test_stale_cache_is_refused(setup, change):
    data, cfg = setup["data"], setup["cfg"]
    if change == "data.num_frames":
        data, field = replace(data, num_frames=8), "num_frames"
    elif change == "data.sampler":
        data, field = replace(data, sampler="middle"), "sampler"
    else:
        cfg, field = replace(cfg, frozen_init_seed=1), "vision_weights_hash"
    vision, audio = build_frozen_encoders(cfg)
    with pytest.raises(CacheSpecMismatch, match=field):
        build_dataset(replace(data, features=str(setup["dir"])), expected_spec=cache_spec(data, vision, audio),
                      **clip_overrides(vision))


def test_extraction_runs_the_encoders_on_its_device_and_puts_them_back(setup, monkeypatch, tmp_path):
    # on a GPU machine the encoders extract there, and a model's encoders go back to where the model is. The moves are
    # recorded, not made: "meta" stands for the GPU, and nothing comes back from meta
    model, moves, during = setup["model"], [], []
    def record(self, device):
        moves.append((self, torch.device(device)))
        return self

    monkeypatch.setattr(torch.nn.Module, "to", record)

    def extract(dataset, vision, audio, out_dir, **kwargs):
        during.extend(moves)
        return recipe_features.ExtractStats()

    monkeypatch.setattr(recipe_features, "extract_features", extract)
    ensure_features(setup["data"], [setup["data"].annotations], model.vision, model.audio, out_dir=str(tmp_path),
                    device=torch.device("meta"))
    meta, cpu = torch.device("meta"), torch.device("cpu")
    assert during == [(model.vision, meta), (model.audio, meta)]
    assert moves == during + [(model.vision, cpu), (model.audio, cpu)]


def test_missing_key_names_the_path(setup, synthetic_dir, tmp_path):
    other = tmp_path / "other.jsonl"
    record = json.loads(Path(f"{synthetic_dir}/test.jsonl").read_text().splitlines()[0])
    video = str(Path(synthetic_dir) / record["video"])
    other.write_text(json.dumps({**record, "video": video}) + "\n")
    data = replace(setup["data"], annotations=str(other), features=str(setup["dir"]))
    clip = clip_overrides(setup["model"].vision)
    dataset = build_dataset(data, expected_spec=setup["spec"], **clip)
    with pytest.raises(KeyError, match=re.escape(f"{video!r} (window None-None) is not in feature cache {setup['dir']}")):
        dataset[0]
    with pytest.raises(ValueError, match="expected_spec"):
        build_dataset(data, **clip)


def test_extraction_killed_then_resumed(synthetic_dir, tmp_path):
    # 12 videos x 3 windows = 36 clips, one per shard, so the kill lands mid-run
    records = [json.loads(line) for split in ("train", "val", "test")
               for line in Path(f"{synthetic_dir}/{split}.jsonl").read_text().splitlines()]
    windows = [{**r, "video": f"{synthetic_dir}/{r['video']}", "start": s, "end": s + 1.0}
               for r in records for s in (0.0, 1.0, 2.0)]
    ann = tmp_path / "all.jsonl"
    ann.write_text("".join(json.dumps(r) + "\n" for r in windows))
    out = tmp_path / "feats"
    cmd = [sys.executable, str(ROOT / "tools/extract_features.py"), "--config", str(ROOT / "configs/synthetic.yaml"),
           "--variant", "cascaded", "--out", str(out), "--shard-size", "1", "--batch-size", "1", "--no-progress",
           f"data.annotations={ann}", "data.num_frames=4", "model.vision.image_size=64"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (out / "index.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    before = json.loads((out / "index.json").read_text())["shards"]
    assert 1 <= len(before) < len(windows)
    shard_bytes = {name: (out / name).read_bytes() for name in before}

    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert f"{len(windows)} clips, {len(windows) - len(before)} written, {len(before)} already cached" in done.stdout
    after = json.loads((out / "index.json").read_text())["shards"]
    assert {k: v for k, v in after.items() if k in before} == before
    assert all((out / name).read_bytes() == data for name, data in shard_bytes.items())  # not recomputed

    cfg = model_config("cascaded", tmp_path)
    vision, audio = build_frozen_encoders(cfg)
    data = DataConfig(annotations=str(ann), num_frames=4, features=str(out))
    cache = FeatureCache(out, cache_spec(data, vision, audio))
    assert len(cache) == len(windows)
    dataset = build_dataset(data, expected_spec=cache_spec(data, vision, audio), **clip_overrides(vision))
    for i in range(0, len(dataset), 7):
        item = dataset[i]
        assert item["frame_features"].shape == (4, vision.num_tokens, vision.output_dim)
        assert torch.isfinite(item["frame_features"]).all()


def test_cache_name_does_not_depend_on_where_the_cache_lives(tmp_path):
    """The embedded default's features keep their name in a cache moved or made on another machine (sweep records
    name them), and a cache of other data gets another."""
    files = [ROOT / "configs" / "synthetic.yaml", ROOT / "configs" / "variants" / "cascaded.yaml"]

    def digest(root: Path, world: str = "world") -> str:
        cfg = load_experiment(files, ["model.llm.arch=causal", "model.llm.path=unset",
                                      f"data.annotations={root / world / 'train.jsonl'}"])
        return feature_digest(cfg, root)

    here, there = tmp_path / "cache", tmp_path / "elsewhere" / "cache"
    assert digest(here) == digest(there)
    assert digest(here) != digest(here, "other-world")
