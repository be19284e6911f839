"""``read_audio`` of a mono AAC track: its decoded float frames read as they are, against each frame through FFmpeg's
resampler to mono float (which then only copies it; the path every other layout or sample format takes).

The clips are the embedded world's kind (3 s, 44.1 kHz mono AAC, written by ``videoqf.data.synthetic``), a 2 s
window of each; the samples of both paths are checked equal, then interleaved repeats, medians per read.

    python benchmarks/audio_read.py [--clips 60] [--repeats 7]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_result  # noqa: E402
from videoqf.data import readers  # noqa: E402
from videoqf.data.synthetic import SyntheticConfig, generate  # noqa: E402
from videoqf.measure import interleaved_medians  # noqa: E402


def through_resampler(frame, to_mono):
    return [out.to_ndarray()[0] for out in to_mono.resample(frame)]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--note", default="", help="a line on the machine's state (e.g. other jobs running)")
    ap.add_argument("--no-write", action="store_true", help="print the table without writing results/")
    args = ap.parse_args(argv)
    world = Path(tempfile.mkdtemp(prefix="audio_read_")) / "syn"
    generate(str(world), SyntheticConfig(num=args.clips, seed=0), progress=False)
    records = [json.loads(line) for name in ("train.jsonl", "test.jsonl") for line in open(world / name)]
    files = [str(world / r["video"]) for r in records if r["has_audio"]]  # some clips are silent
    as_is = readers._mono_samples

    def reads(mono_samples):
        def run():
            readers._mono_samples = mono_samples
            return [readers.read_audio(f, 0.5, 2.5, rate=44_100) for f in files]
        return run

    same = all(torch.equal(a, b) for a, b in zip(reads(as_is)(), reads(through_resampler)()))
    t = interleaved_medians({"resampler": reads(through_resampler), "as is": reads(as_is)}, repeats=args.repeats)
    readers._mono_samples = as_is
    body = (f"{len(files)} clips with sound of the embedded world's kind, a 2 s window of each, 1 process; samples identical: "
            f"{same}.\n\n| path | ms per read |\n|---|---:|\n"
            f"| each frame through the resampler | {t['resampler'] / len(files) * 1e3:.2f} |\n"
            f"| mono float frames as decoded | {t['as is'] / len(files) * 1e3:.2f} |\n"
            f"| speed-up | {t['resampler'] / t['as is']:.2f}x |" + (f"\n\n{args.note}" if args.note else ""))
    print(body)
    if not args.no_write:
        write_result("audio_read", "Audio of a window: mono frames as decoded vs through the resampler", body)
    return body


if __name__ == "__main__":
    main()
