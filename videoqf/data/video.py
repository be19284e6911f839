"""Load one clip: sample frame indices, decode only those, resize/normalise, and cut the audio window.

``load_clip`` is the single entry point the datasets, the feature cache and ``tools/caption.py`` use.
Frames are squashed to ``image_size x image_size`` (no crop, so nothing at the edges is lost) by
FFmpeg while decoding (see ``readers.py``), and normalised with the vision encoder's mean/std (pass its timm data config through the keywords).
Audio is resampled to 16 kHz with torchaudio's ``Resample`` (its kernel built once per rate), as the audio
encoder's filter banks (AST / BEATs style, 16 kHz fbank) expect.

Notation: T sampled frames, S audio samples at 16 kHz.
"""
from __future__ import annotations

import functools
import math
import os
import warnings
from dataclasses import dataclass

import torch
from einops import rearrange
from torchaudio.transforms import Resample

from videoqf.data.errors import BadWindowError, VideoDecodeError
from videoqf.data.readers import open_video, probe, read_audio, read_frames
from videoqf.data.samplers import FrameSampler, RngLike

__all__ = ["AUDIO_SAMPLE_RATE", "BadWindowError", "Clip", "VideoDecodeError", "load_clip", "frames_in_window"]

AUDIO_SAMPLE_RATE = 16_000
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Clip:
    """One decoded clip.

    frames: [T, 3, H, W] float, resized and normalised.
    frame_indices: [T] long, absolute frame indices in the file (padding repeats the last one).
    timestamps: [T] float, presentation time of each frame in seconds.
    frame_mask: [T] bool, False for frames repeated to pad a short clip.
    audio: [S] float mono waveform at 16 kHz for the window, or None when the file has no audio track;
        zero-padded to the window's length where the track ends early.
    audio_mask: [S] bool, True for the samples the track has (all True when it covers the window); all
        False (same length, the window at 16 kHz) without audio.
    path: the file read.
    window: (start, end) in seconds actually used, after clamping to the video's length.
    """

    frames: torch.Tensor
    frame_indices: torch.Tensor
    timestamps: torch.Tensor
    frame_mask: torch.Tensor
    audio: torch.Tensor | None
    audio_mask: torch.Tensor
    path: str
    window: tuple[float, float]

    def media(self) -> dict:
        """The fields a dataset item (and a batch) carries: frames, frame_mask, timestamps, audio, audio_mask."""
        return {"frames": self.frames, "frame_mask": self.frame_mask, "timestamps": self.timestamps,
                "audio": self.audio, "audio_mask": self.audio_mask}

    @property
    def has_audio(self) -> bool:
        return self.audio is not None


def frames_in_window(start: float, end: float, fps: float, num_video_frames: int) -> tuple[int, int]:
    """[first, stop) indices of the frames whose start time t = i / fps lies in [start, end)."""
    eps = 1e-6  # seconds * fps lands a hair off integer frame boundaries
    first = max(0, math.ceil(start * fps - eps))
    stop = min(num_video_frames, math.ceil(end * fps - eps))
    return first, stop


def _resolve_window(path: str, start: float | None, end: float | None, duration: float) -> tuple[float, float]:
    start = 0.0 if start is None else float(start)
    end = duration if end is None else float(end)
    if start >= duration:
        raise BadWindowError(path, f"clip window [{start}, {end}) starts after the end of the video ({duration:.3f} s)")
    if start < 0 or end <= start:
        raise BadWindowError(path, f"bad clip window [{start}, {end}): need 0 <= start < end")
    if end > duration + 1e-6:
        warnings.warn(
            f"clip window [{start:.3f}, {end:.3f}) s runs past the end of {path!r} ({duration:.3f} s); "
            f"clamped to [{start:.3f}, {duration:.3f})",
            stacklevel=3,
        )
        end = duration
    return start, end


@functools.lru_cache(maxsize=8)
def _resampler(rate: int) -> Resample:
    """``rate`` -> 16 kHz; the sinc kernel is built once per rate (building it costs more than applying it)."""
    return Resample(rate, AUDIO_SAMPLE_RATE)


def normalise(frames: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> normalised float [T, 3, H, W]."""
    x = rearrange(frames, "t h w c -> t c h w").float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def load_clip(
    path: str | os.PathLike,
    sampler: FrameSampler,
    *,
    start: float | None = None,
    end: float | None = None,
    audio: bool = True,
    image_size: int = 224,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    seed: RngLike = None,
    backend: str = "auto",
    threads: int | None = None,
) -> Clip:
    """Decode the frames ``sampler`` picks inside the window [start, end) seconds, and its audio.

    ``seed`` (int or numpy Generator) drives random samplers. ``backend``: "auto" (decord, falling
    back to PyAV for files decord cannot open), "decord" or "pyav". ``threads``: video decoding threads; None
    is torch's thread count: all cores in a main process, 1 in a DataLoader worker (torch sets it there).
    Raises ``VideoDecodeError`` naming the path and the cause for a missing, empty, non-video, truncated or
    frameless file, and its subclass ``BadWindowError`` for a window that is malformed, starts after the end or
    holds no frame; warns when clamping. Audio that ends inside (or before) the window is zero-padded and masked.
    """
    path = os.fspath(path)
    info = probe(path)
    reader = open_video(path, backend, image_size, torch.get_num_threads() if threads is None else threads)
    duration = reader.num_frames / reader.fps
    window = _resolve_window(path, start, end, duration)
    first, stop = frames_in_window(*window, reader.fps, reader.num_frames)
    if stop <= first:
        raise BadWindowError(path, f"clip window {window} holds no frame at {reader.fps:g} fps")
    sampled = sampler(stop - first, reader.fps, rng=seed)
    indices = [first + i for i in sampled.indices]
    raw, timestamps, reader = read_frames(reader, indices, fallback=backend == "auto")

    num_audio = round((window[1] - window[0]) * AUDIO_SAMPLE_RATE)
    wave, real = None, 0
    if audio and info.has_audio:
        native = read_audio(path, *window, rate=info.audio_rate)
        wave = _resampler(info.audio_rate)(native) if len(native) else native
        real = wave.shape[0]
        if len(native) < round((window[1] - window[0]) * info.audio_rate):  # the track ends inside the window
            wave = torch.cat([wave, wave.new_zeros(max(num_audio - real, 0))])
        num_audio = wave.shape[0]
    return Clip(
        frames=normalise(raw, mean, std),
        frame_indices=torch.tensor(indices, dtype=torch.long),
        timestamps=timestamps,
        frame_mask=torch.tensor(sampled.mask, dtype=torch.bool),
        audio=wave,
        audio_mask=torch.arange(num_audio) < real,
        path=path,
        window=window,
    )
