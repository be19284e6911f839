"""Dataset and collate over the feature cache: ``VideoTextDataset``'s items with encoder outputs instead
of decoded media (``videoqf.data.extract`` writes the cache, ``videoqf.data.feature_cache`` holds it).

Item (T frames, S audio segments, N tokens, D width): features [T, N, D], frame_mask [T] bool,
timestamps [T], audio_tokens [S, N, D] and audio_segment_mask [S] bool (when the cache has audio),
caption, video_id, path, index: the same items, captions and skipping of unreadable videos as the
wrapped ``VideoTextDataset``, which does the reading (``VideoTextDataset.read``).
"""
from __future__ import annotations

import numpy as np
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from videoqf.data.annotations import VideoRecord
from videoqf.data.collate import collate_items
from videoqf.data.dataset import VideoTextDataset, window_id
from videoqf.data.errors import BadWindowError, VideoDecodeError
from videoqf.data.extract import read_unreadable, record_key
from videoqf.data.feature_cache import FeatureCache


class CachedFeatureDataset(Dataset):
    """``dataset``'s items, their media read from ``cache`` (whose spec names sampler, seed and frames)."""

    def __init__(self, dataset: VideoTextDataset, cache: FeatureCache):
        self.dataset = dataset
        self.cache = cache
        spec = cache.spec
        self._key_args = dict(sampler_name=spec.sampler, sampler_seed=spec.sampler_seed, num_frames=spec.num_frames)
        self.unreadable = read_unreadable(cache.dir)

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    @property
    def items(self) -> list[tuple[int, int]]:
        return self.dataset.items

    @property
    def records(self):
        return self.dataset.records

    def lookup(self, record: VideoRecord, rng: np.random.Generator) -> dict:
        """A record's cached tensors; a video the extraction could not read raises ``VideoDecodeError``."""
        key = record_key(record, **self._key_args)
        if key not in self.cache:
            for listed in (record.video, window_id(record)):
                if listed in self.unreadable:
                    entry = self.unreadable[listed]
                    error = BadWindowError if entry["reason"] == "bad_window" else VideoDecodeError
                    raise error(record.video, entry["cause"], entry["reason"])
            raise KeyError(f"video {record.video!r} (window {record.start}-{record.end}) is not in feature cache "
                           f"{self.cache.dir} as it is now (a key holds the file's size and modification time: a "
                           "replaced file is not served its old features): run tools/extract_features.py over "
                           "these annotations")
        return self.cache.get(key)

    def __getitem__(self, index: int) -> dict:
        return self.dataset.read(index, self.lookup)


def collate_cached(batch: list[dict]) -> dict:
    """Stack cached items, padding T (and S) to the batch's longest with False in the masks.

    features [B, T, N, D], frame_mask [B, T], timestamps [B, T], audio_tokens [B, S, N, D] and
    audio_segment_mask [B, S] (only when the items have audio), caption, video_id [B], path, index [B].
    """
    out = {"features": pad_sequence([item["features"] for item in batch], batch_first=True), **collate_items(batch)}
    if "audio_tokens" in batch[0]:
        out["audio_tokens"] = pad_sequence([item["audio_tokens"] for item in batch], batch_first=True)
        out["audio_segment_mask"] = pad_sequence([item["audio_segment_mask"] for item in batch], batch_first=True,
                                                 padding_value=False)
    return out
