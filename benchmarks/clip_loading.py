"""Real-clip loading: ``load_clip`` clips/s through a DataLoader with 0 and 2 workers, on 720p H.264.

Writes 720p H.264 + AAC clips with PyAV (``benchmarks.decode.make_clip``: moving gradients and a sliding block)
at two key-frame intervals (GOP 30 and 250), then loads an epoch of ``--clips`` clips per setting through a
``torch.utils.data.DataLoader`` (``batch_size=None``, persistent workers started before timing):
- 8 and 32 uniform frames, with and without the 16 kHz audio track;
- 0 and 2 workers (each worker decodes whole clips on one thread; with 0 workers the main process decodes on
  torch's threads, all cores);
- decoding straight to the model's 224 px (decord / swscale scale while converting) against decoding at 720p
  and resizing with torch (bilinear, antialiased), 0 workers, no audio.
Epochs of every setting alternate over ``--repeats`` rounds (order rotated each round); medians reported.

    python benchmarks/clip_loading.py [--clips 8] [--repeats 3] [--seconds 12]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_result  # noqa: E402
from benchmarks.decode import make_clip  # noqa: E402
from videoqf.data.samplers import build_sampler  # noqa: E402
from videoqf.data.video import load_clip  # noqa: E402

SIZE = 224


class Clips(Dataset):
    """``count`` loads of one file; ``resize_after``: decode at full size, then resize with torch."""

    def __init__(self, path: str, count: int, *, frames: int, audio: bool, resize_after: bool = False):
        self.path, self.count, self.audio, self.resize_after = path, count, audio, resize_after
        self.sampler = build_sampler("uniform", num_frames=frames)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        clip = load_clip(self.path, self.sampler, audio=self.audio, image_size=0 if self.resize_after else SIZE)
        if self.resize_after:
            return F.interpolate(clip.frames, size=(SIZE, SIZE), mode="bilinear", antialias=True)
        return clip.frames


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=8, help="clips per epoch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=12)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--note", default="", help="a line on the machine's state (e.g. other jobs running)")
    ap.add_argument("--no-write", action="store_true", help="print the table without writing results/")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        loaders = {}
        for gop in (30, 250):
            path = str(Path(tmp) / f"720p_gop{gop}.mp4")
            make_clip(path, seconds=args.seconds, fps=args.fps, gop=gop)
            for frames in (8, 32):
                for audio in (False, True):
                    for workers in (0, 2):
                        loaders[(gop, frames, audio, workers, "straight")] = DataLoader(
                            Clips(path, args.clips, frames=frames, audio=audio), batch_size=None,
                            num_workers=workers, persistent_workers=workers > 0)
                loaders[(gop, frames, False, 0, "resize after")] = DataLoader(
                    Clips(path, args.clips, frames=frames, audio=False, resize_after=True), batch_size=None)
            for loader in loaders.values():  # warm-up: page cache, workers started, lazy imports
                for _ in loader:
                    pass
        times = {key: [] for key in loaders}
        keys = list(loaders)
        for r in range(args.repeats):
            for key in keys[r % len(keys):] + keys[: r % len(keys)]:
                start = time.perf_counter()
                for _ in loaders[key]:
                    pass
                times[key].append(time.perf_counter() - start)
        for key in keys:
            gop, frames, audio, workers, how = key
            rate = args.clips / statistics.median(times[key])
            rows.append(f"| {gop} | {frames} | {'yes' if audio else 'no'} | {workers} | {how} | {rate:.2f} |")
    table = (
        f"1280x720 H.264 (libx264 veryfast, crf 23) + AAC, {args.seconds} s at {args.fps} fps; epochs of "
        f"{args.clips} clips, median of {args.repeats} interleaved rounds; frames normalised at {SIZE} px. "
        "'straight': decoded at the model's resolution (load_clip's image_size); 'resize after': decoded at 720p "
        f"and resized with torch.{(' ' + args.note) if args.note else ''}\n\n"
        "| GOP | frames | audio | workers | decode | clips/s |\n|---:|---:|---|---:|---|---:|\n" + "\n".join(rows) + "\n")
    print(table)
    if not args.no_write:
        print("wrote", write_result("clip_loading", "Real-clip loading: load_clip through a DataLoader", table))
    return table


if __name__ == "__main__":
    main()
