"""Audio window benchmark: ``load_clip`` of a 2 s window with audio from a 60-minute file against a 10 s file.

The goal is that a window costs the same whatever the file's length (within 1.5x in time and peak memory):
``read_audio`` seeks to the window instead of decoding the whole track. Rows: ``load_clip`` with audio (8
frames at 224 px), ``load_clip`` without audio, ``read_audio`` alone, and for reference decord's
``AudioReader`` (which decodes the whole track when it opens a file: the old path; one repeat). Each
measurement runs in a fresh process, so the peak RSS (``ru_maxrss``) is that of one clip's loading;
times are medians over repeats in that process.

The two files (32x32 video at 1 fps, a 44.1 kHz mono tone, AAC) are written once into ``--dir``; the
60-minute one takes a minute or two to encode.

    python benchmarks/audio_window.py [--dir /tmp/videoqf-audio-bench] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_result  # noqa: E402

RATE = 44_100
FILES = {"60 min": ("long-60min.mp4", 3600.0, 1800.0), "10 s": ("short-10s.mp4", 10.0, 4.0)}  # name, length, start


def write_long_video(path: Path, seconds: float) -> None:
    """32x32 grey frames at 1 fps and a 440 Hz tone, encoded in chunks (the whole track never in memory)."""
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        video = container.add_stream("mpeg4", rate=1)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=RATE)
        audio.layout = "mono"
        frame = np.full((32, 32, 3), 128, np.uint8)
        for _ in range(int(seconds)):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        chunk = 10 * RATE
        for start in range(0, int(seconds * RATE), chunk):
            t = (start + np.arange(min(chunk, int(seconds * RATE) - start))) / RATE
            samples = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            piece = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            piece.sample_rate = RATE
            container.mux(audio.encode(piece))
        container.mux(audio.encode())
    tmp.rename(path)


def measure(path: str, start: float, method: str, repeats: int) -> dict:
    """In this (fresh) process: median seconds of one 2 s window, and the peak RSS."""
    if method in ("load_clip", "load_clip_no_audio"):
        from videoqf.data.samplers import build_sampler
        from videoqf.data.video import load_clip

        sampler = build_sampler("uniform", num_frames=8)
        with_audio = method == "load_clip"

        def run():
            clip = load_clip(path, sampler, start=start, end=start + 2.0, image_size=224, audio=with_audio)
            assert clip.audio_mask.all() == with_audio and clip.audio_mask.shape[0] == 32_000
    elif method == "read_audio":
        from videoqf.data.readers import read_audio

        def run():
            assert read_audio(path, start, start + 2.0, rate=RATE).shape[0] == 2 * RATE
    else:
        import decord

        def run():
            reader = decord.AudioReader(path, sample_rate=-1, mono=True)
            assert reader[round(start * RATE) : round((start + 2.0) * RATE)].shape[1] == 2 * RATE

    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"seconds": statistics.median(times), "cpu_seconds": statistics.median(cpu),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/videoqf-audio-bench")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--measure", nargs=3, metavar=("FILE", "START", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        path, start, method = args.measure
        print(json.dumps(measure(path, float(start), method, args.repeats)))
        return 0
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name, (file, seconds, _) in FILES.items():
        if not (folder / file).is_file():
            print(f"writing the {name} file {folder / file} ...", flush=True)
            write_long_video(folder / file, seconds)
    methods = {"load_clip, 8 frames + audio": "load_clip", "load_clip, 8 frames, audio off": "load_clip_no_audio",
               "read_audio alone": "read_audio", "decord AudioReader (whole track, the old path)": "decord"}
    rows = {}
    for method, key in methods.items():
        for name, (file, _, start) in FILES.items():
            repeats = 1 if key == "decord" else args.repeats
            out = subprocess.run([sys.executable, __file__, "--repeats", str(repeats), "--measure",
                                  str(folder / file), str(start), key], capture_output=True, text=True, check=True)
            rows[(method, name)] = json.loads(out.stdout.strip().splitlines()[-1])
    lines = ["A 2 s window (with its 44.1 kHz audio, resampled to 16 kHz) from the middle of a 60-minute file and "
             "of a 10 s file (32x32 MPEG-4 video at 1 fps + AAC); each row's two runs in fresh processes, median "
             f"of {args.repeats} (the decord row: 1). Goal: the 60-minute file within 1.5x of the 10 s one. CPU time "
             "is the process's own (user + system), which other jobs on a shared machine disturb less than the "
             "wall time.", "",
             "| method | 10 s file: wall / CPU / peak RSS | 60 min file: wall / CPU / peak RSS "
             "| ratio (wall, CPU, RSS) |",
             "| --- | --- | --- | --- |"]
    for method in methods:
        short, long = rows[(method, "10 s")], rows[(method, "60 min")]
        lines.append(f"| {method} | {short['seconds']:.3f} s / {short['cpu_seconds']:.3f} s / "
                     f"{short['peak_rss_mb']:.0f} MB | "
                     f"{long['seconds']:.3f} s / {long['cpu_seconds']:.3f} s / {long['peak_rss_mb']:.0f} MB | "
                     f"{long['seconds'] / short['seconds']:.2f}x, {long['cpu_seconds'] / short['cpu_seconds']:.2f}x, "
                     f"{long['peak_rss_mb'] / short['peak_rss_mb']:.2f}x |")
    lines += ["", "``read_audio`` decodes the window only (it seeks); what grows with the file is opening it: "
              "FFmpeg reads the container's whole sample index (PyAV, for the probe and the audio), and decord's "
              "``VideoReader`` indexes every packet when it opens a file for its frames, audio off as well."]
    print(write_result("audio_window", "Audio of a window: 60-minute file vs 10 s file", "\n".join(lines)).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
