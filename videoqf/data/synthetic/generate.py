"""Build a synthetic diagnostic set: planned in one process (seeded), rendered and encoded in a pool.

Layout of ``out_dir``::

    videos/syn00000.mp4 ...   H.264 (or MPEG-4) clips, AAC mono audio track unless the clip is silent
    train.jsonl val.jsonl test.jsonl   one clip per line: {"video", "caption", "id", ..., "spec"}
    pairs.json                {"order": [[id_a, id_b], ...], "sound": [...]} for the test split
    tokenizer.json            WordPiece tokenizer trained on all captions (the vocabulary is closed)

Pairs: an "order" pair shows the same objects in the same places with the events in another order;
a "sound" pair shows the same pictures with another sound. Both clips of a pair share a split. The test
split is filled with pairs first (up to half of it), so the order/sound diagnostics have enough
pairs; the rest of every split is single clips. Silent clips (no audio track, caption "... in
silence") are a ``silent_fraction`` of the single clips and never part of a sound pair.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from multiprocessing import get_context

import numpy as np
from tqdm import tqdm

from videoqf.data.synthetic.media import AUDIO_RATE, video_codec, write_mp4
from videoqf.data.synthetic.render import render_audio, render_frames
from videoqf.data.synthetic.scenes import can_reorder, caption, reorder, resound, sample_spec
from videoqf.data.synthetic.tokenizer import train_tokenizer
from videoqf.data.synthetic.vocab import SOUNDS

SPLITS = ("train", "val", "test")
# Bumped whenever one config makes other clips than before (2: shapes drawn independently; 3: objects seen during
# their own event by default; 4: spans of whole sampler segments, the longer ones at random places; 5, the
# persistent-objects world only: events are excursions, so no frame shows which are over), so that caches named
# after it (videoqf.recipes.synthetic.synthetic_dir) are never read for another world.
_VERSIONS = {False: 4, True: 5}  # by persistent_objects


def world_version(persistent_objects: bool = False) -> int:
    """The version of the own-event world, or of the persistent-objects one."""
    return _VERSIONS[bool(persistent_objects)]


@dataclass
class SyntheticConfig:
    """Options of ``generate`` (and of ``tools/make_synthetic.py``)."""

    num: int = 1000
    seed: int = 0
    size: int = 96
    fps: int = 8
    num_frames: int = 24  # 3 s at 8 fps
    # events' spans are whole segments of this count: the uniform sampler of as many frames then shows each
    # event's frames at the same places in its span, whatever its position (docs/decisions.md)
    segments: int = 8
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    pair_fraction: float = 0.3  # share of all clips that belong to an order or sound pair
    silent_fraction: float = 0.15  # share of single clips without an audio track
    # False: each object is on screen during its own event only. True: objects that move or turn are on screen all
    # along, back at rest after their event, so a caption must also tell which of them acted when (docs/decisions.md)
    persistent_objects: bool = False
    workers: int = 2

    def __post_init__(self):
        if self.size % 2 or self.size < 16:
            raise ValueError(f"size must be even and >= 16 (yuv420p), got {self.size}")
        if self.num < 3 or self.num_frames < 3 or self.fps < 1:
            raise ValueError(f"need num >= 3, num_frames >= 3, fps >= 1; got {self.num}, {self.num_frames}, {self.fps}")
        if not 3 <= self.segments <= self.num_frames:
            raise ValueError(f"segments must be from 3 (one per event) to num_frames ({self.num_frames}), "
                             f"got {self.segments}")


def _plan_groups(cfg: SyntheticConfig, rng: np.random.Generator) -> list[tuple[str, list[dict]]]:
    """Groups of specs: ("single", [s]), ("order", [a, b]) or ("sound", [a, b]), shuffled."""
    num_pairs = int(cfg.num * cfg.pair_fraction) // 2
    shape = dict(num_frames=cfg.num_frames, segments=cfg.segments, persistent=cfg.persistent_objects)
    groups = []
    for k in range(num_pairs):
        kind = ("order", "sound")[k % 2]
        first = sample_spec(rng, sound=list(SOUNDS)[int(rng.integers(len(SOUNDS)))], **shape)
        while kind == "order" and not can_reorder(first):  # no order would show
            first = sample_spec(rng, sound=first["sound"], **shape)
        groups.append((kind, [first, reorder(first, rng) if kind == "order" else resound(first, rng)]))
    for _ in range(cfg.num - 2 * num_pairs):
        sound = None if rng.random() < cfg.silent_fraction else list(SOUNDS)[int(rng.integers(len(SOUNDS)))]
        groups.append(("single", [sample_spec(rng, sound=sound, **shape)]))
    return [groups[i] for i in rng.permutation(len(groups))]


def _assign_splits(groups, cfg: SyntheticConfig) -> dict[str, list]:
    """Test first (pairs up to half of it, then singles), then val, then the rest to train."""
    n_test = max(1, round(cfg.num * cfg.test_fraction))
    n_val = max(1, round(cfg.num * cfg.val_fraction))
    pairs = [g for g in groups if g[0] != "single"]
    singles = [g for g in groups if g[0] == "single"]
    out: dict[str, list] = {s: [] for s in SPLITS}
    sizes = {"test": 0, "val": 0}
    for split, quota in (("test", n_test), ("val", n_val)):
        while pairs and split == "test" and sizes[split] + 2 <= n_test // 2:
            out[split].append(pairs.pop())
            sizes[split] += 2
        while singles and sizes[split] < quota:
            out[split].append(singles.pop())
            sizes[split] += 1
    out["train"] = pairs + singles
    return out


def _render_one(job: tuple[str, dict, int, int, int]) -> None:
    path, spec, size, fps, seed = job
    audio = None
    if spec["sound"]:
        duration = spec["num_frames"] / fps
        audio = render_audio(spec["sound"], duration=duration, sample_rate=AUDIO_RATE, rng=np.random.default_rng(seed))
    write_mp4(path, render_frames(spec, size), fps=fps, audio=audio)


def generate(out_dir: str, cfg: SyntheticConfig, *, progress: bool = True) -> dict[str, list[dict]]:
    """Write the set described in the module docstring; return the records of each split."""
    rng = np.random.default_rng(cfg.seed)
    splits = _assign_splits(_plan_groups(cfg, rng), cfg)
    os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
    records: dict[str, list[dict]] = {s: [] for s in SPLITS}
    pairs: dict[str, list[list[str]]] = {"order": [], "sound": []}
    jobs = []
    counter = 0
    for split in SPLITS:
        for kind, specs in splits[split]:
            ids = [f"syn{counter + k:05d}" for k in range(len(specs))]
            counter += len(specs)
            if kind != "single" and split == "test":
                pairs[kind].append(ids)
            for k, (clip_id, spec) in enumerate(zip(ids, specs)):
                rel = f"videos/{clip_id}.mp4"
                partner = {"kind": kind, "partner": ids[1 - k]} if kind != "single" else None
                records[split].append({
                    "video": rel, "caption": caption(spec), "id": clip_id, "fps": cfg.fps, "size": cfg.size,
                    "num_frames": cfg.num_frames, "has_audio": spec["sound"] is not None, "pair": partner, "spec": spec,
                })
                jobs.append((os.path.join(out_dir, rel), spec, cfg.size, cfg.fps, cfg.seed * 1_000_003 + counter + k))
    with get_context("fork").Pool(cfg.workers) as pool:
        for _ in tqdm(pool.imap_unordered(_render_one, jobs, chunksize=8), total=len(jobs),
                      desc=f"clips ({video_codec()})", disable=not progress):
            pass
    for split, recs in records.items():
        with open(os.path.join(out_dir, f"{split}.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in recs)
    with open(os.path.join(out_dir, "pairs.json"), "w") as f:
        json.dump(pairs, f, indent=1)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(asdict(cfg), f, indent=1)
    train_tokenizer([r["caption"] for recs in records.values() for r in recs], out_dir)
    return records
