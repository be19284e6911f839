"""Dataset and collate over the feature cache: ``VideoTextDataset``'s items with encoder outputs instead
of decoded media (``videoqf.data.extract`` writes the cache, ``videoqf.data.feature_cache`` holds it).

Items are those of the wrapped ``VideoTextDataset`` (the same captions and skipping of unreadable videos; it
does the reading, ``VideoTextDataset.read``) with the encoders' outputs in place of the decoded media; the
batch schema is ``videoqf.data.batch``.
"""
from __future__ import annotations

import numpy as np
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from videoqf.data.annotations import VideoRecord
from videoqf.data.batch import CACHED_AUDIO, CACHED_AUDIO_MASK, CACHED_FRAMES
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

    def record(self, index: int) -> VideoRecord:
        return self.dataset.record(index)

    def truncate(self, count: int) -> None:
        self.dataset.truncate(count)

    @property
    def num_bad(self) -> int:
        return self.dataset.num_bad

    def skipped_counts(self) -> dict[str, int]:
        return self.dataset.skipped_counts()

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
    """Stack cached items, padding T (and S) to the batch's longest with False in the masks (``videoqf.data.batch``)."""
    out = {CACHED_FRAMES: pad_sequence([item[CACHED_FRAMES] for item in batch], batch_first=True),
           **collate_items(batch)}
    if CACHED_AUDIO in batch[0]:
        out[CACHED_AUDIO] = pad_sequence([item[CACHED_AUDIO] for item in batch], batch_first=True)
        out[CACHED_AUDIO_MASK] = pad_sequence([item[CACHED_AUDIO_MASK] for item in batch], batch_first=True,
                                              padding_value=False)
    return out
