"""Shared fixtures: generated media only (nothing binary is committed).

- ``synthetic_dir``: a tiny synthetic world (12 clips at 64 px, 24 frames at 8 fps, seed 0) built once
  per session with ``videoqf.data.synthetic.generate``; it holds silent clips, an order pair and a sound pair, one of them in the test split.
- ``synthetic_records``: its clips as {split: [jsonl dicts]}.
- ``make_video``: a factory writing an mp4 whose frame i is flat grey 8 * i (so a decoded pixel
  tells which frame it is), with an optional 440 Hz tone or no audio track at all.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from videoqf.data.synthetic import SyntheticConfig, generate, write_mp4

SYNTHETIC_CONFIG = SyntheticConfig(num=12, seed=0, size=64, fps=8, num_frames=24, val_fraction=0.17,
                                   test_fraction=0.34, pair_fraction=0.34, silent_fraction=0.3, workers=2)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("synthetic"))
    records = generate(out, SYNTHETIC_CONFIG, progress=False)
    every = [r for recs in records.values() for r in recs]
    # the tests below rely on both kinds of clip and on a pair being present in the tiny set
    assert any(not r["has_audio"] for r in every) and any(r["has_audio"] for r in every)
    assert any(r["pair"] for r in records["test"])
    assert {r["pair"]["kind"] for r in every if r["pair"]} == {"order", "sound"}
    return out


@pytest.fixture(scope="session")
def synthetic_records(synthetic_dir) -> dict[str, list[dict]]:
    out = {}
    for split in ("train", "val", "test"):
        with open(os.path.join(synthetic_dir, f"{split}.jsonl")) as f:
            out[split] = [json.loads(line) for line in f]
    return out


@pytest.fixture
def make_video(tmp_path):
    def _make(name: str = "grey.mp4", *, num_frames: int = 32, fps: int = 8, size: int = 32,
              tone_hz: float | None = 440.0, audio_rate: int = 44_100) -> str:
        frames = np.repeat((8 * np.arange(num_frames, dtype=np.uint8))[:, None, None, None], 3, axis=3)
        frames = np.ascontiguousarray(np.broadcast_to(frames, (num_frames, size, size, 3)))
        audio = None
        if tone_hz is not None:
            t = np.arange(round(num_frames / fps * audio_rate)) / audio_rate
            audio = (0.4 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
        path = str(tmp_path / name)
        write_mp4(path, frames, fps=fps, audio=audio, audio_rate=audio_rate)
        return path

    return _make
