"""Run the frozen encoders once over a dataset's clips and write their outputs to the feature cache.

One cache entry per distinct clip (video path + window), whatever the number of its captions. Per clip:
``frame_features`` [T, N, D], ``frame_mask`` [T], ``timestamps`` [T] and, with an audio encoder,
``audio_features`` [S, Na, Da] and ``audio_feature_mask`` [S], in the encoders' dtype. A deterministic
sampler gives the frames the dataset would decode; a random one (``random_segment``, ``head_tail``) is
drawn once per clip from ``sampler_seed`` and the clip's key, so the cache holds one fixed draw.
Keys already in the cache are skipped (a killed run resumes); a key holds the file's size and modification
time, so a replaced video is extracted again. Unreadable videos and unusable windows are counted, logged,
and listed in ``unreadable.json`` (``{clip id: {"cause", "reason"}}``, clip ids as the dataset's
``clip_id``) so the cached dataset skips them as ``VideoTextDataset`` does; each extraction merges its
findings into that list (another annotation file's clips stay listed) and drops the clips it now read.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from videoqf.data.annotations import VideoRecord
from videoqf.data.batch import CACHED_AUDIO, CACHED_AUDIO_MASK, CACHED_FRAMES
from videoqf.data.dataset import VideoTextDataset, clip_id, window_id
from videoqf.data.errors import VideoDecodeError
from videoqf.data.feature_cache import CacheSpec, FeatureCacheWriter, cache_key
from videoqf.io import write_atomic

logger = logging.getLogger(__name__)

UNREADABLE_NAME = "unreadable.json"
RANDOM_SAMPLERS = ("random_segment", "head_tail")


def record_key(record: VideoRecord, *, sampler_name: str, sampler_seed: int | None, num_frames: int) -> str:
    """The cache key of a record's clip (an open window end is stored as -1)."""
    window = None
    if record.start is not None or record.end is not None:
        window = (record.start or 0.0, -1.0 if record.end is None else record.end)
    return cache_key(record.video, window, sampler_name, sampler_seed, num_frames)


def read_unreadable(cache_dir: str | os.PathLike) -> dict[str, dict[str, str]]:
    """{clip id: {"cause", "reason"}} of the clips the extraction could not use (empty when none)."""
    path = Path(cache_dir) / UNREADABLE_NAME
    if not path.is_file():
        return {}
    try:
        listed = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete it to have the extraction list the clips again")
    # lists written before reasons were kept map a path to its cause
    return {k: v if isinstance(v, dict) else {"cause": v, "reason": "undecodable"} for k, v in listed.items()}


@dataclass
class ExtractStats:
    """Distinct clips, written now, found already in the cache, and unreadable ones of this call
    (clip id -> cause)."""

    clips: int = 0
    written: int = 0
    skipped: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)


def _encode(clips: list[dict], vision, audio) -> list[dict[str, torch.Tensor]]:
    """Decoded clips -> per-clip tensors, one encoder pass per batch (frames padded to the longest)."""
    frames = pad_sequence([c["frames"] for c in clips], batch_first=True)  # [B, T, 3, H, W]
    features = vision(frames).cpu()  # [B, T, N, D]
    out = [{CACHED_FRAMES: f[: len(c["frame_mask"])].clone(), "frame_mask": c["frame_mask"],
            "timestamps": c["timestamps"]} for f, c in zip(features, clips)]
    if audio is not None:
        tokens, segment_mask = audio([c["audio"] for c in clips])  # [B, S, N, D], [B, S]
        for entry, t, m in zip(out, tokens.cpu(), segment_mask.cpu()):
            entry[CACHED_AUDIO], entry[CACHED_AUDIO_MASK] = t, m
    return out


def extract_features(dataset: VideoTextDataset, vision, audio, out_dir: str | os.PathLike, *, sampler_name: str,
                     sampler_seed: int | None, num_frames: int, batch_size: int = 16, shard_size: int = 256,
                     progress: bool = True) -> ExtractStats:
    """Encode every distinct clip of ``dataset`` not yet in the cache at ``out_dir`` (see the module doc).

    ``audio``: a ``FrozenAudioEncoder`` or None (then no audio is stored and the spec says so); the spec is
    ``CacheSpec.from_encoders(vision, audio, sampler=sampler_name, ...)``.
    """
    spec = CacheSpec.from_encoders(vision, audio, sampler=sampler_name, sampler_seed=sampler_seed,
                                   num_frames=num_frames)
    keys: dict[str, VideoRecord] = {}
    for record in dataset.records:
        keys.setdefault(record_key(record, sampler_name=sampler_name, sampler_seed=sampler_seed,
                                   num_frames=num_frames), record)
    stats = ExtractStats(clips=len(keys))
    found: dict[str, dict[str, str]] = {}
    read_now: set[str] = set()
    with FeatureCacheWriter(out_dir, spec, shard_size=shard_size) as writer:
        todo = [(key, record) for key, record in keys.items() if not writer.has(key)]
        stats.skipped = len(keys) - len(todo)
        bar = tqdm(total=len(todo), desc="extracting features", unit="clip", disable=not progress)
        for first in range(0, len(todo), batch_size):
            decoded = []
            for key, record in todo[first : first + batch_size]:
                rng = (np.random.default_rng([sampler_seed, int(key[:15], 16)])
                       if sampler_name in RANDOM_SAMPLERS else None)
                try:
                    decoded.append((key, dataset.decode(record, rng)))
                except VideoDecodeError as error:
                    key_id = clip_id(record, error)
                    stats.unreadable[key_id] = error.cause
                    found[key_id] = {"cause": error.cause, "reason": error.reason}
                    logger.warning("skipping unreadable video %s (%s): %s", key_id, error.reason, error.cause)
            if decoded:
                for (key, _), tensors in zip(decoded, _encode([c for _, c in decoded], vision, audio)):
                    writer.add(key, tensors)
                    read_now.update((keys[key].video, window_id(keys[key])))
                    stats.written += 1
            bar.update(len(todo[first : first + batch_size]))
        bar.close()
        # under the writer's lock: merged with what earlier calls (other annotation files) listed
        listed = {k: v for k, v in read_unreadable(out_dir).items() if k not in read_now}
        write_atomic(Path(out_dir) / UNREADABLE_NAME, json.dumps({**listed, **found}, indent=1).encode())
    return stats
