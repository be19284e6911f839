#!/usr/bin/env python
"""Caption video files with a trained checkpoint (one caption per video).

  python tools/caption.py clip.mp4 other.mp4 --checkpoint runs/cascaded-20261123-1200
  python tools/caption.py long.mp4 --start 10 --end 14 --beams 3 --json --checkpoint DIR

--checkpoint takes a checkpoint directory, a stage directory or a run directory (its latest complete
checkpoint of the last stage), or any folder ``videoqf.pretrained.load_pretrained`` reads (e.g. a local copy
of Salesforce/blip2-opt-2.7b). A missing or undecodable file is reported by name and the others are
still captioned; the exit status is 1 when any video failed.
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# DeepSpeed's logger writes to the stdout it finds as it loads (transformers imports it): send it to stderr,
# so that stdout carries the results alone and --json output can be piped.
with redirect_stdout(sys.stderr):
    from videoqf.data.errors import VideoDecodeError  # noqa: E402
    from videoqf.llm.config import MAX_NEW_TOKENS  # noqa: E402
    from videoqf.pretrained.inference import (add_device_argument, add_released_arguments,  # noqa: E402
                                              load_checkpoint, released_overrides)
    from videoqf.recipes.checkpoint_model import caption_video  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="+", help="video files (any ordinary mp4; with or without audio)")
    ap.add_argument("--checkpoint", required=True, help="checkpoint, stage or run directory, a transformers "
                    "BLIP-2 / InstructBLIP / InstructBLIP-Video folder, or a LAVIS .pth")
    ap.add_argument("--start", type=float, help="window start in seconds")
    ap.add_argument("--end", type=float, help="window end in seconds (clamped to the video's length)")
    ap.add_argument("--prompt", help="prompt for the LLM (default: the one it was trained with)")
    ap.add_argument("--beams", type=int, default=1, help="beam width (1: greedy)")
    ap.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="longest caption, in LLM tokens")
    ap.add_argument("--json", action="store_true", help="one JSON object per line: path, window, caption")
    add_device_argument(ap)
    add_released_arguments(ap)
    args = ap.parse_args(argv)
    try:
        model, cfg, ckpt = load_checkpoint(args.checkpoint, device=args.device, **released_overrides(args))
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if model.bridge is None:
        raise SystemExit(f"error: {args.checkpoint} holds a stage-1 model (retrieval heads, no LLM), which cannot "
                         "caption: tools/evaluate.py retrieves with it")
    failed = 0
    for path in args.videos:
        try:
            text, window = caption_video(model, cfg, path, start=args.start, end=args.end, prompt=args.prompt,
                                         beams=args.beams, max_new_tokens=args.max_new_tokens)
        except VideoDecodeError as err:
            failed += 1
            print(f"error: {err}", file=sys.stderr)
            if args.json:
                print(json.dumps({"path": path, "error": str(err)}), flush=True)
            continue
        if args.json:
            print(json.dumps({"path": path, "window": list(window), "caption": text}), flush=True)
        else:
            print(f"{path}: {text}", flush=True)
    if failed:
        print(f"{failed} of {len(args.videos)} videos failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
