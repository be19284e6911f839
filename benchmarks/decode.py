"""Decode benchmark: ``load_clip`` (decord, sampled frames only) vs decoding every frame with PyAV.

Writes a 720p H.264 clip (with an AAC track) into a temp dir with PyAV, then times, interleaved over
repeats (medians reported), per clip:
- ``load_clip`` with 8 and 32 uniform frames (audio off, then 8 frames with its 16 kHz audio);
- baseline "PyAV all": decode every frame, convert every frame to RGB, pick the same indices, then
  resize them with torch (bilinear, antialiased) — the naive loader;
- baseline "PyAV all, convert picked": decode every frame, convert only the picked ones, resized by
  swscale as ``load_clip`` does — a stronger baseline that isolates the cost of decoding everything.
Every method decodes on one thread, as a DataLoader worker does (``load_clip``'s decord reader uses one), and
returns normalised [T, 3, 224, 224] frames. Results go to
``benchmarks/results/decode.md`` with the command, machine and date.

    python benchmarks/decode.py [--seconds 12] [--fps 30] [--gop 250 30] [--repeats 7]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import av
import decord
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from videoqf.data.samplers import build_sampler
from videoqf.data.synthetic.media import write_mp4
from videoqf.data.video import IMAGENET_MEAN, IMAGENET_STD, normalise, load_clip

WIDTH, HEIGHT = 1280, 720


def make_clip(path: str, *, seconds: int, fps: int, gop: int) -> None:
    """Moving gradients and a sliding block (compresses like camera footage, unlike noise)."""
    n = seconds * fps
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    frames = np.empty((n, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for t in range(n):
        frames[t, ..., 0] = (xs + 4 * t) % 256
        frames[t, ..., 1] = (ys + 2 * t) % 256
        frames[t, ..., 2] = ((xs + ys) / 8 + t) % 256
        x0 = (12 * t) % (WIDTH - 200)
        frames[t, 260:460, x0 : x0 + 200] = (240, 240, 240)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(seconds * 44_100) / 44_100)).astype(np.float32)
    write_mp4(path, frames, fps=fps, audio=tone, codec="libx264",
              options={"preset": "veryfast", "crf": "23", "g": str(gop), "threads": "0"})


def pyav_all(path: str, indices: list[int], convert_all: bool) -> torch.Tensor:
    """Decode every frame; the naive variant converts all of them at full size and resizes with torch."""
    wanted = set(indices)
    picked = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # the same decoding threads as load_clip's reader
        for i, frame in enumerate(container.decode(stream)):
            if convert_all:
                rgb = frame.to_ndarray(format="rgb24")
            elif i in wanted:
                rgb = frame.to_ndarray(format="rgb24", width=224, height=224, interpolation="BICUBIC")
            if i in wanted:
                picked[i] = rgb
    raw = torch.from_numpy(np.stack([picked[i] for i in indices]))
    if convert_all:
        x = F.interpolate(rearrange(raw, "t h w c -> t c h w").float(), size=(224, 224), mode="bilinear", antialias=True)
        raw = rearrange(x.round().clamp(0, 255).to(torch.uint8), "t c h w -> t h w c")
    return normalise(raw, IMAGENET_MEAN, IMAGENET_STD)


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    except (OSError, subprocess.CalledProcessError):
        model = platform.processor() or "?"
    return f"{model}, {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--gop", type=int, nargs="+", default=[250, 30], help="key-frame intervals to test")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "decode.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(min(4, os.cpu_count() or 1))

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for gop in args.gop:
            path = os.path.join(tmp, f"720p_gop{gop}.mp4")
            make_clip(path, seconds=args.seconds, fps=args.fps, gop=gop)
            n = args.seconds * args.fps
            methods = {}
            for k in (8, 32):
                sampler = build_sampler("uniform", num_frames=k)
                idx = sampler(n, args.fps).indices
                methods[f"load_clip, {k} frames"] = (k, lambda s=sampler: load_clip(path, s, audio=False, threads=1))
                methods[f"PyAV all, convert all, {k} frames"] = (k, lambda i=idx: pyav_all(path, i, True))
                methods[f"PyAV all, convert picked, {k} frames"] = (k, lambda i=idx: pyav_all(path, i, False))
            methods["load_clip, 8 frames + 16 kHz audio"] = (
                8, lambda: load_clip(path, build_sampler("uniform", num_frames=8), threads=1))
            times = {name: [] for name in methods}
            for fn in methods.values():  # warm-up: page cache, lazy imports
                fn[1]()
            for r in range(args.repeats):
                names = list(methods)
                for name in names[r % len(names):] + names[: r % len(names)]:  # rotate the order each round
                    start = time.perf_counter()
                    methods[name][1]()
                    times[name].append(1000 * (time.perf_counter() - start))
            for k in (8, 32):
                base = statistics.median(times[f"PyAV all, convert all, {k} frames"])
                strong = statistics.median(times[f"PyAV all, convert picked, {k} frames"])
                for name in [n_ for n_ in methods if methods[n_][0] == k]:
                    med = statistics.median(times[name])
                    rows.append((gop, name, med, base / med, strong / med))
            print(f"gop {gop}: done", file=sys.stderr)

    command = "python benchmarks/decode.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "## Decoding: `load_clip` vs decoding every frame with PyAV",
        "",
        f"- command: `{command.strip()}`",
        f"- machine: {machine()}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- clip: {WIDTH}x{HEIGHT} H.264 (libx264 veryfast, crf 23) + AAC, {args.seconds} s at {args.fps} fps "
        f"({args.seconds * args.fps} frames); frames resized to 224 and normalised in every method",
        f"- decord {decord.__version__}, PyAV {av.__version__}, torch {torch.__version__}; "
        f"median of {args.repeats} interleaved repeats after one warm-up",
        "",
        "| GOP | method | ms / clip | speed-up vs PyAV all | vs PyAV convert picked |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {g} | {name} | {ms:.1f} | {a:.2f}x | {b:.2f}x |" for g, name, ms, a, b in rows]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
