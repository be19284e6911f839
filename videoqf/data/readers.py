"""Readers that turn a video file into the sampled frames and its audio, decoding nothing else.

``DecordReader`` is the fast path: decord builds a packet index when it opens the file and
``get_batch`` seeks to the nearest key frame before each requested index, so only the frames up to
the sampled ones are decoded and only those are converted to RGB. ``PyAVReader`` is the fallback for
files decord cannot open (decord is known to fail on some real H.264 streams and on files
with a broken index); it decodes the stream in order and keeps the sampled frames only. Both expose
``num_frames``, ``fps`` and ``read(indices) -> (frames uint8 [T, size, size, 3], timestamps [T] s)``.
Both resize inside FFmpeg (swscale, bicubic) while converting to RGB when given ``size``: a 720p
frame is never materialised as RGB at full size, which is most of the cost of a naive loader.

Audio: ``read_audio`` returns the mono waveform of a time window at the file's own rate, decoding only
that window (PyAV seeks; decord's ``AudioReader`` would decode the whole track). ``probe`` opens the container with
PyAV first, which classifies bad files (missing, empty, not a video, truncated) and says whether an
audio track exists: decord's ``AudioReader`` raises on a file without one instead of saying so.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import av
import decord
import numpy as np
import torch

from videoqf.data.errors import VideoDecodeError

# decord forwards every FFmpeg warning to stderr (thousands of lines on some H.264 streams);
# failures still reach us as exceptions, which become VideoDecodeError with the cause. PyAV ignores
# FFmpeg's log by default; we leave it so: its Python log callback can deadlock threaded decoding.
decord.logging.set_level(decord.logging.QUIET)

# first bytes of containers we know, to tell "truncated video" from "not a video at all"
_CONTAINER_MAGIC = {b"ftyp": 4, b"\x1aE\xdf\xa3": 0, b"RIFF": 0, b"FLV": 0, b"OggS": 0}


@dataclass(frozen=True)
class MediaInfo:
    """What the container says before any decoding."""

    has_video: bool
    has_audio: bool
    audio_rate: int | None


def _looks_like_container(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return any(head[at : at + len(magic)] == magic for magic, at in _CONTAINER_MAGIC.items())


def probe(path: str) -> MediaInfo:
    """Open the container (no decoding); raise ``VideoDecodeError`` naming what is wrong."""
    if not os.path.exists(path):
        raise VideoDecodeError(path, "file does not exist", "missing")
    if os.path.isdir(path):
        raise VideoDecodeError(path, "is a directory, not a video file", "not_video")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)", "empty")
    try:
        with av.open(path) as container:
            audio = container.streams.audio
            info = MediaInfo(
                has_video=bool(container.streams.video),
                has_audio=bool(audio),
                audio_rate=audio[0].rate if audio else None,
            )
    except av.FFmpegError as exc:
        if _looks_like_container(path):
            raise VideoDecodeError(path, f"truncated or corrupt container ({exc.strerror})", "truncated") from exc
        raise VideoDecodeError(path, f"not a video: no known container format ({exc.strerror})", "not_video") from exc
    if not info.has_video:
        raise VideoDecodeError(path, "no video stream in the container", "no_video_stream")
    return info


class DecordReader:
    """decord ``VideoReader`` over one file; opened where it is used (never pickled to workers).

    threads: decoding threads (0: the decoder's choice, all cores). 1 where DataLoader workers are the
    parallelism, as more would oversubscribe the cores."""

    def __init__(self, path: str, size: int | None = None, threads: int = 1):
        self.path = path
        self.size = size
        self.threads = threads
        self._vr = decord.VideoReader(path, num_threads=threads, width=size or -1, height=size or -1)
        self.num_frames = len(self._vr)
        self.fps = float(self._vr.get_avg_fps())

    def read(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        frames = torch.from_numpy(self._vr.get_batch(indices).asnumpy())
        times = torch.as_tensor(self._vr.get_frame_timestamp(indices)[:, 0], dtype=torch.float32)
        return frames, times


class PyAVReader:
    """Sequential PyAV decoding that keeps the requested frames; counts frames by demuxing first. threads: as
    ``DecordReader``'s."""

    def __init__(self, path: str, size: int | None = None, threads: int = 1):
        self.path = path
        self.size = size
        self.threads = threads
        try:
            with av.open(path) as container:
                stream = container.streams.video[0]
                self.fps = float(stream.average_rate or stream.guessed_rate or 0)
                # demuxing packets is cheap and fails where a truncated file ends
                declared = stream.frames
                self.num_frames = sum(1 for p in container.demux(stream) if p.size > 0)
        except av.FFmpegError as exc:
            raise VideoDecodeError(path, f"truncated or corrupt stream ({exc.strerror})", "truncated") from exc
        if declared and self.num_frames < declared:
            # the demuxer stops quietly where a truncated file ends; sampling only the part that is
            # left would silently change what the clip shows
            raise VideoDecodeError(
                path, f"truncated: the container declares {declared} frames, only {self.num_frames} are present",
                "truncated")

    def read(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        wanted = set(indices)
        found: dict[int, tuple[np.ndarray, float]] = {}
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                stream.codec_context.thread_count = self.threads
                for i, frame in enumerate(container.decode(stream)):
                    if i in wanted:
                        rgb = frame.to_ndarray(format="rgb24", width=self.size or frame.width,
                                               height=self.size or frame.height, interpolation="BICUBIC")
                        found[i] = (rgb, float(frame.time or 0.0))
                    if i >= max(wanted):
                        break
        except av.FFmpegError as exc:
            raise VideoDecodeError(self.path, f"corrupt stream while decoding ({exc.strerror})") from exc
        missing = sorted(wanted - found.keys())
        if missing:
            raise VideoDecodeError(
                self.path, f"truncated or corrupt: frames {missing[:5]} of {self.num_frames} did not decode",
                "truncated")
        frames = torch.from_numpy(np.stack([found[i][0] for i in indices]))
        return frames, torch.tensor([found[i][1] for i in indices], dtype=torch.float32)


def open_video(path: str, backend: str = "auto", size: int | None = None,
               threads: int = 1) -> DecordReader | PyAVReader:
    """A frame reader for ``path`` giving ``size x size`` frames (None: as stored), decoding on ``threads``
    threads (0: all cores; 1 in DataLoader workers).

    ``backend``: ``"decord"``, ``"pyav"``, or ``"auto"`` (decord, PyAV where decord fails).
    """
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"unknown video backend {backend!r}; use 'auto', 'decord' or 'pyav'")
    reader: DecordReader | PyAVReader
    if backend == "pyav":
        reader = PyAVReader(path, size, threads)
    else:
        try:
            reader = DecordReader(path, size, threads)
        except decord.DECORDError as exc:
            if backend == "decord":
                raise VideoDecodeError(path, f"decord cannot open it ({str(exc).strip()[-200:]})") from exc
            reader = PyAVReader(path, size, threads)
    if reader.num_frames == 0:
        raise VideoDecodeError(path, "zero decodable frames", "no_video_stream")
    if reader.fps <= 0:
        raise VideoDecodeError(path, "the video stream has no frame rate")
    return reader


def read_frames(
    reader: DecordReader | PyAVReader, indices: list[int], *, fallback: bool
) -> tuple[torch.Tensor, torch.Tensor, DecordReader | PyAVReader]:
    """``reader.read(indices)``; where decord fails mid-stream, retry with PyAV if ``fallback``.

    decord's ``get_batch`` fails on some files it opens (corrupt packets; some frame widths, e.g. 48,
    hit a buffer-size check), so "auto" retries those with PyAV. Returns frames, timestamps and the
    reader that produced them.
    """
    try:
        frames, times = reader.read(indices)
        return frames, times, reader
    except decord.DECORDError as exc:
        cause = f"decord failed on frames {indices} ({str(exc).strip()[-160:]})"
        if not fallback:
            raise VideoDecodeError(reader.path, cause) from exc
    pyav = PyAVReader(reader.path, reader.size, reader.threads)
    if pyav.num_frames != reader.num_frames:
        raise VideoDecodeError(reader.path, f"{cause}; PyAV counts {pyav.num_frames} frames, decord {reader.num_frames}")
    frames, times = pyav.read(indices)
    return frames, times, pyav


# AAC and most audio codecs overlap each frame with the one before: decoding starts this far before the
# window so that its first samples come out as they do when the whole track is decoded.
AUDIO_PREROLL_SECONDS = 0.1


def _mono_samples(frame: av.AudioFrame, to_mono: av.AudioResampler) -> list[np.ndarray]:
    """The frame's samples, mono float32; a mono float frame as it is, since the resampler would only copy it
    (``benchmarks/audio_read.py``)."""
    if frame.format.name in ("flt", "fltp") and frame.layout.nb_channels == 1 and frame.sample_rate == to_mono.rate:
        return [frame.to_ndarray().reshape(-1)]
    return [out.to_ndarray()[0] for out in to_mono.resample(frame)]


def read_audio(path: str, start: float, end: float, *, rate: int) -> torch.Tensor:
    """Mono waveform [S] of [start, end) seconds at the file's own sample ``rate`` (from ``probe``); shorter
    (possibly empty) where the track ends before ``end``.

    PyAV seeks to the window and decodes only the packets that cover it (plus a short pre-roll), so the cost
    does not grow with the file's length.
    """
    lo, hi = round(start * rate), round(end * rate)
    chunks: list[np.ndarray] = []
    try:
        with av.open(path) as container:
            stream = container.streams.audio[0]
            to_mono = av.AudioResampler(format="flt", layout="mono", rate=rate)
            seek_to = start - AUDIO_PREROLL_SECONDS
            if seek_to > 0:
                container.seek(int(seek_to / stream.time_base), stream=stream, backward=True)
            position = None  # index (at ``rate``) of the next decoded sample
            for frame in container.decode(stream):
                if position is None:
                    seeked = frame.pts is not None and seek_to > 0
                    position = round(float(frame.pts * stream.time_base) * rate) if seeked else 0
                if position >= hi:
                    break
                for samples in _mono_samples(frame, to_mono):
                    first, last = max(lo - position, 0), min(hi - position, len(samples))
                    if last > first:
                        chunks.append(samples[first:last])
                    position += len(samples)
    except av.FFmpegError as exc:
        raise VideoDecodeError(path, f"audio track could not be decoded ({str(exc).strip()[-200:]})") from exc
    return torch.from_numpy(np.concatenate(chunks)).float() if chunks else torch.zeros(0)
