"""Bad data loses nothing and stops nothing: bad windows are a VideoDecodeError naming the file, skipped and
counted by reason; audio that ends before the window is padded and masked; every epoch is told to the
dataset; the cache's unreadable list is merged, never replaced; a replaced video is never served stale;
framewise VTC ignores padded frames; the no-decay patterns name real parameters; --resume of a missing
path fails at once."""
import importlib.util
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from _tiny import model_config
from videoqf.data.annotations import VideoRecord
from videoqf.data.config import DataConfig, build_dataset, cache_spec
from videoqf.data.dataset import VideoTextDataset
from videoqf.data.errors import BadWindowError, VideoDecodeError
from videoqf.data.extract import extract_features, read_unreadable
from videoqf.data.samplers import build_sampler
from videoqf.data.synthetic import write_mp4
from videoqf.data.video import AUDIO_SAMPLE_RATE, load_clip
from videoqf.recipes.features import clip_overrides
from videoqf.train.data import MicroBatchStream

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("start,end,cause", [
    (5.0, 6.0, "starts after the end"),
    (4.0, None, "starts after the end"),
    (2.0, 2.0, "need 0 <= start < end"),
    (-1.0, 1.0, "need 0 <= start < end"),
    (3.0, 1.0, "need 0 <= start < end"),
])
def test_bad_window_is_a_decode_error_naming_the_file(make_video, start, end, cause):
    path = make_video(num_frames=32, fps=8)  # 4 s
    with pytest.raises(BadWindowError, match=cause) as info:
        load_clip(path, build_sampler("uniform", num_frames=4), start=start, end=end, image_size=16)
    assert isinstance(info.value, VideoDecodeError) and info.value.path == path and path in str(info.value)
    assert info.value.reason == "bad_window"


def short_audio_video(path: Path, *, seconds: int = 4, audio_seconds: float = 1.0, rate: int = 44_100) -> str:
    frames = np.full((8 * seconds, 32, 32, 3), 100, np.uint8)
    t = np.arange(round(audio_seconds * rate)) / rate
    write_mp4(str(path), frames, fps=8, audio=(0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), audio_rate=rate)
    return str(path)


def test_audio_that_ends_before_or_inside_the_window(tmp_path):
    path = short_audio_video(tmp_path / "short_audio.mp4")
    sampler = build_sampler("uniform", num_frames=4)
    after = load_clip(path, sampler, start=2.0, end=4.0, image_size=16)  # the sound ended at 1 s
    assert after.audio.shape == (2 * AUDIO_SAMPLE_RATE,) and after.audio_mask.shape == after.audio.shape
    assert not after.audio_mask.any() and not after.audio.any()
    partly = load_clip(path, sampler, start=0.5, end=2.0, image_size=16)
    mask = partly.audio_mask
    assert partly.audio.shape == mask.shape == (round(1.5 * AUDIO_SAMPLE_RATE),)
    real = int(mask.sum())
    assert abs(real - AUDIO_SAMPLE_RATE // 2) < 0.05 * AUDIO_SAMPLE_RATE, real  # about the 0.5 s of sound left
    assert mask[:real].all() and not mask[real:].any()  # only the real samples, at the front
    assert partly.audio[: real - 400].abs().max() > 0.1 and not partly.audio[real:].any()


def records_with_bad_ones(tmp_path, make_video) -> list[VideoRecord]:
    good = make_video("good.mp4", num_frames=32, fps=8)
    missing = str(tmp_path / "missing.mp4")
    return [VideoRecord(good, ["full"], video_id=0), VideoRecord(good, ["past the end"], 9.0, 10.0, video_id=1),
            VideoRecord(missing, ["gone"], video_id=2), VideoRecord(good, ["zero"], 1.0, 1.0, video_id=3),
            VideoRecord(good, ["first second"], 0.0, 1.0, video_id=4)]


def test_dataset_skips_bad_windows_per_record_and_counts_reasons(tmp_path, make_video):
    dataset = VideoTextDataset(records_with_bad_ones(tmp_path, make_video), build_sampler("uniform", num_frames=2),
                               image_size=16, audio=False, max_bad_fraction=1.0)
    items = [dataset[i] for i in range(len(dataset))]
    # a bad window skips its record only: the same file's other records are served
    assert [it["caption"] for it in items] == ["full"] + ["first second"] * 4
    assert dataset.skipped_counts() == {"bad_window": 2, "missing": 1}
    assert items[1]["skipped"] == {f"{tmp_path}/good.mp4 [9.0, 10.0)": "bad_window",
                                   str(tmp_path / "missing.mp4"): "missing",
                                   f"{tmp_path}/good.mp4 [1.0, 1.0)": "bad_window"}
    assert items[0]["skipped"] == {}


def test_every_epoch_is_told_to_the_dataset_and_resumes(make_video):
    record = VideoRecord(make_video(num_frames=64), [f"caption {i}" for i in range(20)], video_id=0)
    dataset = VideoTextDataset([record], build_sampler("random_segment", num_frames=4), image_size=8, audio=False)

    def stream(**kw):
        return MicroBatchStream(dataset, lambda items: items[0], micro_batch_size=1, seed=0, rank=0, world_size=1, **kw)

    full = stream()
    epochs = [full.next() for _ in range(6)]
    assert len({e["caption"] for e in epochs}) >= 3  # MSR-VTT-like: a different caption as epochs go by
    assert len({tuple(e["frames"].flatten()[:50].tolist()) for e in epochs}) >= 3  # and other frames
    resumed = stream(epoch=3, position=0)
    for want in epochs[3:]:
        got = resumed.next()
        assert got["caption"] == want["caption"] and torch.equal(got["frames"], want["frames"])


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    from videoqf.models.frozen import build_frozen_encoders

    torch.manual_seed(0)
    cfg = model_config("cascaded", tmp_path_factory.mktemp("encoders"))
    return build_frozen_encoders(cfg)


def extract(data: DataConfig, vision, audio, out: Path):
    spec = cache_spec(data, vision, audio)
    stats = extract_features(build_dataset(data, **clip_overrides(vision)), vision,
                             audio if spec.audio_encoder else None, out,
                             sampler_name=spec.sampler, sampler_seed=spec.sampler_seed, num_frames=spec.num_frames,
                             batch_size=4, progress=False)
    return spec, stats


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_unreadable_list_is_merged_and_a_replaced_video_is_not_served_stale(tmp_path, make_video, encoders):
    vision, audio = encoders
    good, other = make_video("good.mp4", num_frames=16), make_video("other.mp4", num_frames=16, tone_hz=None)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 10)
    train = write_jsonl(tmp_path / "train.jsonl", [{"video": good, "caption": "a"},
                                                   {"video": good, "caption": "b", "start": 5.0, "end": 6.0},
                                                   {"video": str(tmp_path / "gone.mp4"), "caption": "c"}])
    held = write_jsonl(tmp_path / "held.jsonl", [{"video": other, "caption": "d"},
                                                 {"video": str(text), "caption": "e"}])
    data = DataConfig(annotations=train, num_frames=2, max_bad_fraction=1.0)
    out = tmp_path / "cache"
    spec, _ = extract(data, vision, audio, out)
    extract(replace(data, annotations=held), vision, audio, out)  # the held-out set must not erase train's list
    listed = read_unreadable(out)
    assert {k: v["reason"] for k, v in listed.items()} == {
        f"{good} [5.0, 6.0)": "bad_window", str(tmp_path / "gone.mp4"): "missing", str(text): "not_video"}
    cached = build_dataset(replace(data, features=str(out)), expected_spec=spec, **clip_overrides(vision))
    assert [cached[i]["caption"] for i in range(3)] == ["a", "a", "a"]
    assert cached.dataset.skipped_counts() == {"bad_window": 1, "missing": 1}
    before = cached[0]["frame_features"]

    # the video is replaced under the same name: its old features are refused, then extracted again
    write_mp4(good, np.full((16, 32, 32, 3), 250, np.uint8), fps=8)
    os.utime(good, ns=(time.time_ns(), time.time_ns() + 10**9))
    fresh = build_dataset(replace(data, features=str(out)), expected_spec=spec, **clip_overrides(vision))
    with pytest.raises(KeyError, match="not served its old features"):
        fresh[0]
    _, stats = extract(data, vision, audio, out)
    assert stats.written == 1
    after = build_dataset(replace(data, features=str(out)), expected_spec=spec,
                          **clip_overrides(vision))[0]["frame_features"]
    assert not torch.equal(before, after)
    assert len(read_unreadable(out)) == 3  # still listed, merged again


def test_framewise_vtc_ignores_padded_frames():
    from videoqf.backends import backend_config, build_backend
    from videoqf.objectives.vtc import VideoTextContrastive

    torch.manual_seed(0)
    backend = build_backend("framewise", backend_config("framewise", {}, preset="tiny")).eval()
    feats = torch.randn(2, 4, 5, backend.config.qformer.encoder_width)
    frame_mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    with torch.no_grad():
        vt = backend(feats, frame_mask)
        q = vt.contrastive_tokens.shape[1] // 4
        assert torch.equal(vt.contrastive_mask, frame_mask.repeat_interleave(q, dim=1))
        vtc = VideoTextContrastive(vt.contrastive_tokens.shape[-1], 16)
        text = torch.randn(2, vt.contrastive_tokens.shape[-1])
        loss = vtc(vt.contrastive_tokens, text, gather=False, query_mask=vt.contrastive_mask)["loss"]
        changed = vt.contrastive_tokens.clone()
        changed[0, 3 * q :] = 100.0  # what the padded frame's queries hold must not matter
        assert torch.equal(vtc(changed, text, gather=False, query_mask=vt.contrastive_mask)["loss"], loss)
        assert not torch.equal(vtc(changed, text, gather=False)["loss"], loss)


def test_no_decay_patterns_match_the_models_parameters(tmp_path):
    from fnmatch import fnmatch

    from videoqf.models.video_lm import VideoLanguageModel
    from videoqf.train.config import DEFAULT_NO_DECAY, TrainConfig
    from videoqf.train.optim import param_groups

    class Words:  # the model only needs a vocabulary and special ids from the tokenizer here
        vocab_size, pad_token_id, bos_token_id, eos_token_id, sep_token_id, cls_token_id = 96, 0, 5, 3, 4, 2

        def __len__(self):
            return 96

        def get_vocab(self):
            return {f"w{i}": i for i in range(96)}

    for variant in ("cascaded", "spatiotemporal"):
        torch.manual_seed(0)
        model = VideoLanguageModel(model_config(variant, tmp_path), Words())
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        for pattern in DEFAULT_NO_DECAY:
            assert any(fnmatch(n, pattern) for n in names), (variant, pattern)
        groups = param_groups(model, TrainConfig())
        by_id = {id(p): n for n, p in model.named_parameters()}
        exempt = {by_id[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
        tables = [n for n in names if n.endswith(("position.table", "query_tokens", "text_embeddings.position.weight"))]
        assert tables and set(tables) <= exempt, (variant, sorted(set(tables) - exempt))


def test_resume_of_a_missing_path_fails_at_once(tmp_path):
    spec = importlib.util.spec_from_file_location("train_video", ROOT / "tools" / "train_video.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for path in (tmp_path / "typo", tmp_path):  # no such directory; a directory without a checkpoint
        start = time.perf_counter()
        with pytest.raises(SystemExit, match=f"--resume: cannot resume {path}"):
            tool.main(["--resume", str(path), "--variant", "cascaded"])
        assert time.perf_counter() - start < 5
    assert not (tmp_path / "typo").exists()  # nothing was trained into it
