"""Video-text dataset over annotation records: decodes clips with ``load_clip`` per item.

Bad videos: an unreadable file or an unusable window (``VideoDecodeError``, ``BadWindowError``) is logged
once with its path and cause, counted by reason, and replaced by the next readable item, so one broken
file or record does not stop an epoch. A bad file is known by its path (all its records are skipped), a
bad window by path and window (``clip_id``). Each item lists, under ``skipped``, the bad clips passed over
to reach it (``{clip id: reason}``): the trainer counts those across DataLoader workers. A run
stops with a ``RuntimeError`` naming the counts once the bad videos this process has met exceed
``max_bad_fraction`` of the videos it is responsible for (all of them in the main process, about
1/W of them in each of W DataLoader workers): a broken dataset then fails early and loudly.

Workers: nothing holds an open decoder, so the dataset pickles to DataLoader workers and every
worker opens its files itself. Randomness (random samplers, caption choice) is seeded by
(seed, epoch, index), so an item is the same in any worker; call ``set_epoch`` each epoch.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
from torch.utils.data import Dataset, get_worker_info

from videoqf.data.annotations import VideoRecord
from collections import Counter

from videoqf.data.errors import BadWindowError, VideoDecodeError
from videoqf.data.samplers import FrameSampler
from videoqf.data.video import IMAGENET_MEAN, IMAGENET_STD, load_clip

logger = logging.getLogger(__name__)

CAPTION_MODES = ("random", "first", "all")


def window_id(record: VideoRecord) -> str:
    """A record's clip as the skip lists name it when only its window is bad."""
    return f"{record.video} [{record.start}, {record.end})"


def clip_id(record: VideoRecord, error: VideoDecodeError) -> str:
    """What a bad clip is known by: its file, or its file and window when only the window is bad."""
    return window_id(record) if isinstance(error, BadWindowError) else record.video


class VideoTextDataset(Dataset):
    """Items are dicts (notation: T frames, S audio samples at 16 kHz):

    frames [T, 3, H, W] float, frame_mask [T] bool, timestamps [T] float seconds,
    audio [S] float or None, audio_mask [S] bool, caption str, video_id int (shared by the captions
    of one video), path str, index int (the item actually returned, after skipping bad videos),
    skipped {clip id: reason} (the bad clips passed over to reach it; usually empty).

    caption_mode: "random" (one item per video, a caption drawn per epoch), "first" (one item per
    video, its first caption) or "all" (one item per caption).
    """

    def __init__(
        self,
        records: list[VideoRecord],
        sampler: FrameSampler,
        *,
        image_size: int = 224,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        audio: bool = True,
        max_bad_fraction: float = 0.01,
        caption_mode: str = "random",
        seed: int = 0,
        backend: str = "auto",
    ):
        if caption_mode not in CAPTION_MODES:
            raise ValueError(f"caption_mode must be one of {CAPTION_MODES}, got {caption_mode!r}")
        if not records:
            raise ValueError("VideoTextDataset needs at least one record")
        self.records = records
        self.sampler = sampler
        self.clip_kwargs = dict(image_size=image_size, mean=mean, std=std, audio=audio, backend=backend)
        self.max_bad_fraction = max_bad_fraction
        self.caption_mode = caption_mode
        self.seed = seed
        self.epoch = 0
        # (record index, caption index); -1 = draw one at random
        pick = {"random": [-1], "first": [0]}
        self.items = [
            (r, c) for r, rec in enumerate(records) for c in pick.get(caption_mode, range(len(rec.captions)))
        ]
        self.bad_paths: dict[str, str] = {}  # clip id (path, or path and window) -> cause, in this process
        self.bad_reasons: dict[str, str] = {}  # clip id -> reason

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def record(self, index: int) -> VideoRecord:
        """The annotation record of item ``index``."""
        return self.records[self.items[index][0]]

    def truncate(self, count: int) -> None:
        """Keep the first ``count`` items (evaluation on a subset)."""
        self.items = self.items[:count]

    @property
    def num_bad(self) -> int:
        return len(self.bad_paths)

    def skipped_counts(self) -> dict[str, int]:
        """Distinct bad clips met in this process, by reason."""
        return dict(sorted(Counter(self.bad_reasons.values()).items()))

    def _known_bad(self, record: VideoRecord) -> str | None:
        for key in (record.video, window_id(record)):
            if key in self.bad_paths:
                return key
        return None

    def _budget(self) -> float:
        """Bad videos this process may meet before giving up."""
        info = get_worker_info()
        share = len(self.records) / (info.num_workers if info is not None else 1)
        return self.max_bad_fraction * share

    def _note_bad(self, record: VideoRecord, error: VideoDecodeError) -> str:
        key = clip_id(record, error)
        if key not in self.bad_paths:
            self.bad_paths[key] = error.cause
            self.bad_reasons[key] = error.reason
            logger.warning("skipping unreadable video %s (%s): %s", key, error.reason, error.cause)
        if self.num_bad > self._budget():
            raise RuntimeError(
                f"{self.num_bad} unreadable videos met out of {len(self.records)} in the dataset (this process' "
                f"budget: max_bad_fraction={self.max_bad_fraction} -> {self._budget():.2f}); last: {error}"
            )
        return key

    def __getitem__(self, index: int) -> dict:
        return self.read(index, self.decode)

    def decode(self, record: VideoRecord, rng: np.random.Generator) -> dict:
        """The media of one item: frames, frame_mask, timestamps, audio, audio_mask (raises VideoDecodeError)."""
        return load_clip(record.video, self.sampler, start=record.start, end=record.end, seed=rng,
                         **self.clip_kwargs).media()

    def read(self, index: int, load: Callable[[VideoRecord, np.random.Generator], dict]) -> dict:
        """Item ``index`` with its media from ``load(record, rng)``: the one place where items, caption
        choice and the skipping of bad videos live (``CachedFeatureDataset`` reads through it too)."""
        passed: dict[str, str] = {}
        for offset in range(len(self.items)):
            item = (index + offset) % len(self.items)
            rec_idx, cap_idx = self.items[item]
            record = self.records[rec_idx]
            known = self._known_bad(record)
            if known is not None:
                passed[known] = self.bad_reasons[known]
                continue
            rng = np.random.default_rng([self.seed, self.epoch, item])
            try:
                media = load(record, rng)
            except VideoDecodeError as error:
                key = self._note_bad(record, error)
                passed[key] = error.reason
                continue
            if cap_idx < 0:
                cap_idx = int(rng.integers(len(record.captions)))
            return {**media, "caption": record.captions[cap_idx], "video_id": record.video_id,
                    "path": record.video, "index": item, "skipped": passed}
        raise RuntimeError(f"no readable video left in the dataset ({self.num_bad} unreadable)")
