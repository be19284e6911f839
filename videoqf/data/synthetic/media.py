"""Write frames (+ optional audio) to an mp4 with PyAV: H.264 when the wheel has libx264, else MPEG-4."""
from __future__ import annotations

import av
import numpy as np

AUDIO_RATE = 44_100  # an ordinary AAC rate, so readers really resample to 16 kHz


def video_codec() -> str:
    """'libx264' when this PyAV build can encode H.264, else 'mpeg4' (decord reads both)."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_mp4(
    path: str,
    frames: np.ndarray,
    *,
    fps: int,
    audio: np.ndarray | None = None,
    audio_rate: int = AUDIO_RATE,
    codec: str | None = None,
    options: dict[str, str] | None = None,
) -> None:
    """frames: uint8 [T, H, W, 3] (H, W even); audio: float32 [S] mono at ``audio_rate`` or None (no track)."""
    codec = codec or video_codec()
    height, width = frames.shape[1:3]
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # one thread: generation already runs one clip per process; crf 18 keeps flat colours exact
        defaults = {"preset": "veryfast", "crf": "18", "threads": "1"} if codec == "libx264" else {"qscale": "2"}
        stream.options = {**defaults, **(options or {})}
        if audio is not None:
            astream = container.add_stream("aac", rate=audio_rate)
            astream.layout = "mono"
            # FFmpeg's default AAC search (twoloop) took most of a clip's writing time; fast is no less
            # faithful on these tones (docs/decisions.md)
            astream.options = {"aac_coder": "fast"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
        if audio is not None:
            chunk = av.AudioFrame.from_ndarray(audio[None].astype(np.float32), format="fltp", layout="mono")
            chunk.sample_rate = audio_rate
            container.mux(astream.encode(chunk))
            container.mux(astream.encode())
