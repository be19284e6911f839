"""Batch ``VideoTextDataset`` items, padding frames and audio to the batch's longest with masks; the batch
schema is ``videoqf.data.batch``."""
from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence


def collate_items(batch: list[dict]) -> dict:
    """What every batch has, whatever brings the media: frame_mask [B, T], timestamps [B, T], caption,
    video_id [B], path, index [B], skipped."""
    return {
        "frame_mask": pad_sequence([item["frame_mask"] for item in batch], batch_first=True, padding_value=False),
        "timestamps": pad_sequence([item["timestamps"] for item in batch], batch_first=True),
        "caption": [item["caption"] for item in batch],
        "video_id": torch.tensor([item["video_id"] for item in batch], dtype=torch.long),
        "path": [item["path"] for item in batch],
        "index": torch.tensor([item["index"] for item in batch], dtype=torch.long),
        "skipped": {key: reason for item in batch for key, reason in item.get("skipped", {}).items()},
    }


def collate_clips(batch: list[dict]) -> dict:
    has_audio = any(item["audio"] is not None for item in batch)
    if has_audio:
        waves = [item["audio"] if item["audio"] is not None else torch.zeros(len(item["audio_mask"])) for item in batch]
        audio = pad_sequence(waves, batch_first=True)
        audio_mask = pad_sequence([item["audio_mask"] for item in batch], batch_first=True, padding_value=False)
    else:
        audio, audio_mask = None, torch.zeros(len(batch), 0, dtype=torch.bool)
    frames = pad_sequence([item["frames"] for item in batch], batch_first=True)
    return {"frames": frames, **collate_items(batch), "audio": audio, "audio_mask": audio_mask}
