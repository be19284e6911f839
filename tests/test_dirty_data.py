"""A dirty dataset end to end: 200 tiny clips, a fifth of them bad in eight ways, train stage 1 and stage 2 to
the end from video and from the feature cache; the skipped clips are counted by reason in metrics.jsonl and
results.json; the caption tool captions every good file of a mixed list and names every bad one."""
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from _tiny import tiny_config
from videoqf.data.synthetic import write_mp4
from videoqf.recipes.run import run_experiment

ROOT = Path(__file__).resolve().parent.parent
CLIPS, PER_WAY = 200, 5
CAPTIONS = ["a red circle appears", "a blue square moves", "a yellow triangle turns blue", "a green circle appears"]
# what the data skips, by reason; the eighth way (audio shorter than the window) is padded and masked, not skipped
SKIPPED = {"missing": PER_WAY, "empty": PER_WAY, "truncated": PER_WAY, "not_video": 2 * PER_WAY,
           "bad_window": 2 * PER_WAY}


def write_clip(path: Path, seed: int, *, audio_seconds: float | None = 1.0) -> None:
    """1 s of 32x32 video at 8 fps (a flat colour per seed) with a tone of ``audio_seconds`` (None: silent)."""
    frames = np.full((8, 32, 32, 3), 40 * (seed % 6), np.uint8)
    frames[:, : 4 * (seed % 8 + 1)] = 200
    audio = None
    if audio_seconds is not None:
        t = np.arange(round(audio_seconds * 16_000)) / 16_000
        audio = (0.4 * np.sin(2 * np.pi * (300 + 50 * seed) * t)).astype(np.float32)
    write_mp4(str(path), frames, fps=8, audio=audio, audio_rate=16_000)


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    """train.jsonl (200 records, 40 bad, 5 with audio shorter than their window), test.jsonl (a few of each)."""
    root = tmp_path_factory.mktemp("dirty")
    videos = root / "videos"
    videos.mkdir()
    originals = []
    for seed in range(8):  # a few distinct encodes, copied under many names (encoding 200 would be slow)
        originals.append(videos / f"orig{seed}.mp4")
        write_clip(originals[-1], seed, audio_seconds=None if seed == 7 else 1.0)
    write_clip(videos / "short_audio.mp4", 3, audio_seconds=0.2)
    rows, ways = [], {}
    rng = np.random.default_rng(0)
    for i in range(CLIPS):
        path = videos / f"clip{i:03d}.mp4"
        row = {"video": str(path), "caption": CAPTIONS[i % len(CAPTIONS)]}
        way = (i // 5) % 8 if i % 5 == 0 else None  # every fifth clip is bad, the eight ways in turn
        if way == 0:
            pass  # missing
        elif way == 1:
            path.write_bytes(b"")
        elif way == 2:
            data = originals[i % 7].read_bytes()
            path.write_bytes(data[: len(data) // 2])
        elif way == 3:
            path.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
        elif way == 4:
            path.write_text("this is a caption file, not a video\n" * 20)
        elif way == 5:
            shutil.copy(originals[i % 8], path)
            row.update(start=5.0, end=6.0)  # past the end of a 1 s clip
        elif way == 6:
            shutil.copy(originals[i % 8], path)
            row.update(start=0.5, end=0.5)  # zero-length
        elif way == 7:
            shutil.copy(videos / "short_audio.mp4", path)
            row.update(start=0.5, end=1.0)  # the sound ended at 0.2 s
        else:
            shutil.copy(originals[i % 8], path)
        ways[str(path)] = way
        rows.append(row)
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = {way: next(r for r in rows if ways[r["video"]] == way) for way in range(8)}
    goods = [r for r in rows if ways[r["video"]] is None]
    held = [first[0], first[2], first[5], first[7], *goods[:8]]  # missing, truncated, window, short audio
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    return root, rows, ways


def dirty_config(root: Path, synthetic_dir, *extra):
    return tiny_config(synthetic_dir, f"data.annotations={root / 'train.jsonl'}",
                       f"eval.annotations={root / 'test.jsonl'}",
                       "eval.pairs=''", "data.max_bad_fraction=0.25", "train.micro_batch_size=40",
                       "stages.stage1.steps=5", "stages.stage2.steps=2", "data.num_frames=2",
                       "model.standardize_clips=16", "model.vision.image_size=32", *extra)


def check_counts(run_dir: Path) -> None:
    results = json.loads((run_dir / "results.json").read_text())
    assert results["skipped"]["stage1"] == SKIPPED, results["skipped"]  # one epoch of 5 steps x 40: every clip
    assert results["skipped"]["stage2"] and all(n <= SKIPPED[r] for r, n in results["skipped"]["stage2"].items())
    assert results["skipped"]["eval"] == {"bad_window": 1, "missing": 1, "truncated": 1}
    assert results["metrics"]["skipped_missing"] == 1
    for stage, steps in (("stage1", 5), ("stage2", 2)):
        lines = [json.loads(line) for line in (run_dir / stage / "metrics.jsonl").read_text().splitlines()]
        train = [line for line in lines if line["kind"] == "train"]
        assert [line["step"] for line in train] == list(range(1, steps + 1))  # to the end
        assert train[-1]["skipped_clips"] == results["skipped"][stage]


@pytest.mark.parametrize("source", ["video", "cache"])
def test_dirty_dataset_trains_both_stages_and_counts_skips(dirty, synthetic_dir, tmp_path, source):
    root, _, _ = dirty
    # from video with DataLoader workers: the counts come back with the batches, not from one process' dataset
    extra = ["train.num_workers=2"] if source == "video" else [f"data.features={tmp_path / 'features'}"]
    run_dir = tmp_path / "run"
    run_experiment(dirty_config(root, synthetic_dir, *extra), run_dir)
    check_counts(run_dir)
    if source == "video":
        caption_mixed_list(run_dir, dirty)


def caption_mixed_list(run_dir: Path, dirty) -> None:
    _, rows, ways = dirty
    spec = importlib.util.spec_from_file_location("caption_tool", ROOT / "tools" / "caption.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    # one file of each kind of bad file, two good ones, and the short-audio one
    by_way = {way: [r["video"] for r in rows if ways[r["video"]] == way] for way in (0, 1, 2, 3, 4, 7, None)}
    paths = [by_way[way][0] for way in (0, 1, 2, 3, 4, 7)] + by_way[None][:2]
    bad = {p for p in paths if ways[p] in (0, 1, 2, 3, 4)}
    for window in ([], ["--start", "0.25", "--end", "0.75"]):
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = tool.main([*paths, "--checkpoint", str(run_dir), "--json", "--max-new-tokens", "4", *window])
        assert code == 1
        got = {row["path"]: row for row in map(json.loads, out.getvalue().splitlines())}
        assert set(got) == set(paths)
        for path in paths:
            if path in bad:
                assert path in got[path]["error"], got[path]
            else:
                assert isinstance(got[path]["caption"], str) and "error" not in got[path], got[path]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = tool.main([paths[6], paths[7], "--checkpoint", str(run_dir), "--json", "--start", "999"])
    assert code == 1  # a window past the end of every file: each named, none stops the others
    assert [json.loads(line)["path"] for line in out.getvalue().splitlines()] == [paths[6], paths[7]]
