"""The one batch schema: what a collated batch holds, whether decoded media or cached features bring it.

Notation: B clips, T frame slots (padded to the batch's longest), H x W pixels, N tokens per frame, Dv / Da the
encoders' widths, S audio samples (16 kHz) or audio segments, L text tokens.

Always (``videoqf.data.collate.collate_items``):
    frame_mask [B, T] bool      real frames (padded slots False; every clip has one)
    timestamps [B, T] float     each frame's time in the video, seconds
    caption    list[str]        one caption per clip
    video_id   [B] long         the same id for captions of one video
    path       list[str]        the video file
    index      [B] long         the dataset item actually returned (after skipping unreadable videos)
    skipped    dict[str, str]   the clips the items passed over, clip id -> reason (counted by the trainer)
Media, decoded (``collate_clips``) -- the frozen encoders run on them:
    frames     [B, T, 3, H, W]  normalised pixels (zeros where padded)
    audio      [B, S] float or None; audio_mask [B, S] bool (``[B, 0]`` when no clip of the batch has audio)
Media, cached (``videoqf.data.cached.collate_cached``) -- the frozen encoders' outputs, read from the cache:
    frame_features      [B, T, N, Dv]
    audio_features      [B, S, Na, Da] and audio_feature_mask [B, S] bool (when the cache has audio)
Added by the caption collate (``videoqf.models.collate.CaptionCollate``):
    text_ids / text_mask [B, L]  the captions in the Q-Former's tokenizer (padded to the batch's longest)
    prompt      list[str]        the LLM prompt / instruction per clip (when templates are configured)
"""
from __future__ import annotations

CACHED_FRAMES = "frame_features"
CACHED_AUDIO = "audio_features"
CACHED_AUDIO_MASK = "audio_feature_mask"
