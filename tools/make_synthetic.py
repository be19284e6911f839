"""Generate the synthetic diagnostic world (see videoqf/data/synthetic/generate.py for the layout).

    python tools/make_synthetic.py OUT_DIR --num 1000 --seed 0 [--size 96] [--fps 8] [--num-frames 24]
"""
from __future__ import annotations

import argparse
import os
from dataclasses import fields

from videoqf.data.synthetic import SyntheticConfig, generate, video_codec


def parse_args(argv=None) -> tuple[str, SyntheticConfig]:
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(
        description="Write a synthetic video-text set: mp4 clips of coloured shapes doing 2-3 events in "
        "order (appear / move left-right-up-down / turn a colour), most with an AAC sound named in the "
        "caption (low hum 200 Hz, high beep 1500 Hz, noise burst), some with no audio track ('in silence'). "
        "Writes OUT_DIR/videos/*.mp4, train/val/test.jsonl (captions + per-clip event metadata with frame "
        "spans), pairs.json (test-split pairs differing only in event order / only in sound) and a "
        "WordPiece tokenizer.json (load it with videoqf.data.synthetic.load_tokenizer).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("out_dir", help="output directory (created)")
    help_text = {
        "num": "number of clips", "seed": "random seed (same seed, same set)", "size": "frame side in pixels (even)",
        "fps": "frames per second", "num_frames": "frames per clip",
        "segments": "events' spans are whole segments of the clip cut in this many (match the sampler's frame count)",
        "val_fraction": "share of clips in val",
        "test_fraction": "share of clips in test", "pair_fraction": "share of clips in order/sound pairs",
        "silent_fraction": "share of single clips without an audio track", "workers": "encoding processes",
        "persistent_objects": "objects that move or turn stay on screen all along, back at rest after their "
                              "event, so order shows in time only (else each is seen during its own event only)",
    }
    for field in fields(SyntheticConfig):
        default = getattr(defaults, field.name)
        kind = dict(action=argparse.BooleanOptionalAction) if isinstance(default, bool) else dict(type=type(default))
        parser.add_argument(f"--{field.name.replace('_', '-')}", default=default, help=help_text[field.name], **kind)
    args = vars(parser.parse_args(argv))
    out_dir = args.pop("out_dir")
    return out_dir, SyntheticConfig(**args)


def main(argv=None) -> None:
    out_dir, cfg = parse_args(argv)
    records = generate(out_dir, cfg)
    counts = ", ".join(f"{split} {len(recs)}" for split, recs in records.items())
    print(f"wrote {cfg.num} clips ({video_codec()}) to {os.path.abspath(out_dir)}: {counts}")


if __name__ == "__main__":
    main()
