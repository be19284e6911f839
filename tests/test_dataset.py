"""Annotation readers, VideoTextDataset (bad-file skipping and threshold), collate, DataLoader workers."""
import json
import logging
import os

import pytest
import torch
from torch.utils.data import DataLoader

from videoqf.data.annotations import read_annotations
from videoqf.data.collate import collate_clips
from videoqf.data.config import DataConfig, build_dataset
from videoqf.data.dataset import VideoTextDataset
from videoqf.data.samplers import build_sampler
from videoqf.data.video import IMAGENET_MEAN, IMAGENET_STD


def test_jsonl_reader_merges_captions_and_resolves_paths(tmp_path):
    lines = [
        {"video": "a.mp4", "caption": "first", "extra": 1},
        {"video": "a.mp4", "caption": ["second", "third"]},
        {"video": "/abs/b.mp4", "caption": "bee", "start": 1.5, "end": "3"},
        {"video": "a.mp4", "caption": "windowed", "start": 2},
    ]
    path = tmp_path / "ann.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    records = read_annotations(str(path), video_root="/data")
    assert [r.video for r in records] == ["/data/a.mp4", "/abs/b.mp4", "/data/a.mp4"]
    assert records[0].captions == ["first", "second", "third"] and records[0].meta == {"extra": 1}
    assert (records[1].start, records[1].end) == (1.5, 3.0) and records[2].start == 2.0
    assert [r.video_id for r in records] == [0, 1, 2]
    # default root: the annotation file's folder
    assert read_annotations(str(path))[0].video == str(tmp_path / "a.mp4")


def test_jsonl_reader_names_the_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"video": "a.mp4", "caption": "ok"}\n{"caption": "no video"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        read_annotations(str(path))


def test_csv_and_webvid_readers(tmp_path):
    generic = tmp_path / "ann.csv"
    generic.write_text("video,caption,start,end\nx.mp4,a cat,,\nx.mp4,a small cat,,\ny.mp4,a dog,0.5,2\n")
    records = read_annotations(str(generic), video_root="/v")
    assert [(r.video, r.captions, r.start, r.end) for r in records] == [
        ("/v/x.mp4", ["a cat", "a small cat"], None, None), ("/v/y.mp4", ["a dog"], 0.5, 2.0)]
    webvid = tmp_path / "results_2M_val.csv"
    webvid.write_text("videoid,contentUrl,duration,page_dir,name\n"
                      "1066674784,https://x/1.mp4,PT00H00M29S,006001_006050,\"Aerial view, of a city\"\n"
                      "31353427,https://x/2.mp4,PT00H00M10S,,Woman walking\n")
    records = read_annotations(str(webvid), video_root="/webvid")
    assert [r.video for r in records] == ["/webvid/006001_006050/1066674784.mp4", "/webvid/31353427.mp4"]
    assert records[0].captions == ["Aerial view, of a city"] and records[0].meta["url"] == "https://x/1.mp4"
    broken = tmp_path / "broken.csv"
    broken.write_text("path,text\na.mp4,hi\n")
    with pytest.raises(ValueError, match="missing CSV columns"):
        read_annotations(str(broken))


def test_msrvtt_reader(tmp_path):
    info = {
        "info": {"year": "2016"},
        "videos": [
            {"id": 0, "video_id": "video0", "category": 9, "url": "u", "start time": 137.7, "end time": 149.4, "split": "train"},
            {"id": 1, "video_id": "video1", "category": 16, "url": "u", "start time": 184.3, "end time": 206.8, "split": "validate"},
        ],
        "sentences": [
            {"caption": "a car is shown", "video_id": "video0", "sen_id": 0},
            {"caption": "a man talks", "video_id": "video1", "sen_id": 1},
            {"caption": "a red car", "video_id": "video0", "sen_id": 2},
        ],
    }
    path = tmp_path / "train_val_videodatainfo.json"
    path.write_text(json.dumps(info))
    records = read_annotations(str(path), video_root="/msrvtt/TrainValVideo", split="train")
    assert len(records) == 1 and records[0].video == "/msrvtt/TrainValVideo/video0.mp4"
    assert records[0].captions == ["a car is shown", "a red car"] and records[0].start is None
    assert len(read_annotations(str(path), video_root="/m")) == 2
    with pytest.raises(ValueError, match="no video with split"):
        read_annotations(str(path), split="test")


def _records(synthetic_dir, split="train"):
    return read_annotations(os.path.join(synthetic_dir, f"{split}.jsonl"))


def test_dataset_items(synthetic_dir):
    records = _records(synthetic_dir)
    ds = VideoTextDataset(records, build_sampler("uniform", num_frames=4), image_size=32)
    assert len(ds) == len(records)
    item = ds[1]
    assert item["frames"].shape == (4, 3, 32, 32) and item["frame_mask"].all()
    assert item["caption"] == records[1].captions[0] and item["video_id"] == records[1].video_id
    assert item["index"] == 1 and item["path"] == records[1].video
    silent = next(i for i, r in enumerate(records) if not r.meta["has_audio"])
    assert ds[silent]["audio"] is None and not ds[silent]["audio_mask"].any()


def test_caption_modes_and_video_ids(tmp_path, make_video):
    video = make_video(num_frames=8)
    path = tmp_path / "ann.jsonl"
    path.write_text(json.dumps({"video": video, "caption": ["one", "two", "three"]}) + "\n"
                    + json.dumps({"video": video, "caption": "other window", "start": 0.5}) + "\n")
    records = read_annotations(str(path))
    sampler = build_sampler("uniform", num_frames=2)
    every = VideoTextDataset(records, sampler, image_size=8, caption_mode="all", audio=False)
    assert len(every) == 4
    assert [every[i]["caption"] for i in range(4)] == ["one", "two", "three", "other window"]
    assert [every[i]["video_id"] for i in range(4)] == [0, 0, 0, 1]
    first = VideoTextDataset(records, sampler, image_size=8, caption_mode="first", audio=False)
    assert len(first) == 2 and first[0]["caption"] == "one"
    drawn = VideoTextDataset(records, sampler, image_size=8, caption_mode="random", audio=False, seed=1)
    picks = set()
    for epoch in range(20):
        drawn.set_epoch(epoch)
        picks.add(drawn[0]["caption"])
    assert picks == {"one", "two", "three"}
    drawn.set_epoch(3)
    assert drawn[0]["caption"] == drawn[0]["caption"]


def _with_bad_files(synthetic_dir, tmp_path, num_bad):
    records = _records(synthetic_dir)[:5]
    for k in range(num_bad):
        bad = tmp_path / f"bad{k}.mp4"
        bad.write_text("not a video")
        records[2 * k].video = str(bad)
    return records


def test_dataset_skips_and_counts_bad_videos(synthetic_dir, tmp_path, caplog):
    records = _with_bad_files(synthetic_dir, tmp_path, 1)
    ds = VideoTextDataset(records, build_sampler("uniform", num_frames=2), image_size=16, max_bad_fraction=0.25)
    with caplog.at_level(logging.WARNING, logger="videoqf.data.dataset"):
        items = [ds[i] for i in range(len(ds))] + [ds[0]]
    assert ds.num_bad == 1 and str(tmp_path / "bad0.mp4") in ds.bad_paths
    assert [it["index"] for it in items] == [1, 1, 2, 3, 4, 1]  # index 0 is bad: the next readable one
    warnings = [r for r in caplog.records if "bad0.mp4" in r.getMessage()]
    assert len(warnings) == 1 and "not a video" in warnings[0].getMessage()


def test_dataset_stops_past_the_bad_fraction(synthetic_dir, tmp_path):
    records = _with_bad_files(synthetic_dir, tmp_path, 2)
    ds = VideoTextDataset(records, build_sampler("uniform", num_frames=2), image_size=16, max_bad_fraction=0.25)
    ds[0]  # 1 bad of 5 is within 0.25
    with pytest.raises(RuntimeError, match=r"2 unreadable videos met out of 5.*max_bad_fraction=0.25"):
        ds[2]


def test_collate_pads_frames_and_audio(synthetic_dir):
    records = _records(synthetic_dir)
    silent = next(r for r in records if not r.meta["has_audio"])
    loud = next(r for r in records if r.meta["has_audio"])
    loud_short = type(loud)(**{**vars(loud), "end": 1.0, "video_id": 99})
    ds = VideoTextDataset([silent, loud, loud_short], build_sampler("fps", num_frames=8, target_fps=2.0), image_size=16)
    items = [ds[i] for i in range(3)]
    assert [len(it["frames"]) for it in items] == [6, 6, 2]
    batch = collate_clips(items)
    assert batch["frames"].shape == (3, 6, 3, 16, 16)
    assert batch["frame_mask"].sum(1).tolist() == [6, 6, 2] and batch["frames"][2, 2:].abs().sum() == 0
    assert batch["audio"].shape == (3, 48000) and batch["audio_mask"].sum(1).tolist() == [0, 48000, 16000]
    assert batch["audio"][0].abs().sum() == 0
    assert batch["video_id"].tolist() == [silent.video_id, loud.video_id, 99] and batch["video_id"].dtype == torch.long
    assert batch["caption"] == [it["caption"] for it in items]
    no_audio = collate_clips([items[0], items[0]])
    assert no_audio["audio"] is None and no_audio["audio_mask"].shape == (2, 0)


def test_dataloader_with_two_workers(synthetic_dir):
    cfg = DataConfig(annotations=os.path.join(synthetic_dir, "train.jsonl"), sampler="random_segment",
                     num_frames=4)
    ds = build_dataset(cfg, image_size=16, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_clips)
    batches = list(loader)
    assert sum(len(b["caption"]) for b in batches) == len(ds)
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(len(ds)))
    # seeded per (seed, epoch, index): the workers give what the main process gives
    first = batches[0]
    again = collate_clips([ds[i] for i in range(3)])
    assert torch.equal(first["frames"], again["frames"])


def test_data_config_rejects_unknown_and_empty(tmp_path):
    with pytest.raises(TypeError):
        DataConfig(features_dir="x")
    with pytest.raises(ValueError, match="annotations"):
        build_dataset(DataConfig(), image_size=16, mean=IMAGENET_MEAN, std=IMAGENET_STD)
