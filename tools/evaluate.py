#!/usr/bin/env python
"""Evaluate a checkpoint on held-out clips: retrieval R@1/5/10 (contrastive top-k, then matching rerank),
caption CIDEr / BLEU-4, and on the synthetic world order / sound accuracy on its paired clips.

  python tools/evaluate.py --checkpoint runs/cascaded-20261123-1200 --data test.jsonl --pairs pairs.json

--checkpoint takes any folder ``videoqf.pretrained.load_pretrained`` reads. Zero-shot retrieval of a released
model uses its own ITC / ITM heads: a transformers ``Blip2ForImageTextRetrieval`` folder or a LAVIS ``blip2`` .pth
has them. A captioning folder (Blip2 / InstructBlip ForConditionalGeneration) has none: its heads start fresh, so
its retrieval figures say nothing until stage 1 trains them.
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# DeepSpeed's logger writes to the stdout it finds as it loads (transformers imports it): send it to stderr,
# so that stdout carries the results alone and --json output can be piped.
with redirect_stdout(sys.stderr):
    from videoqf.eval.report import format_metrics  # noqa: E402
    from videoqf.pretrained.inference import (add_device_argument, add_released_arguments,  # noqa: E402
                                              load_checkpoint, released_overrides)
    from videoqf.recipes.run import datasets, evaluation, make_collate  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="checkpoint, stage or run directory, a transformers "
                    "BLIP-2 / InstructBLIP / InstructBLIP-Video / Blip2ForImageTextRetrieval folder, or a LAVIS .pth")
    ap.add_argument("--data", required=True, help="annotation file of the held-out clips (JSONL, CSV, MSR-VTT JSON)")
    ap.add_argument("--video-root", help="folder that relative video paths resolve against")
    ap.add_argument("--pairs", default="", help="synthetic pairs.json (order / sound pairs)")
    ap.add_argument("--max-clips", type=int, default=0, help="evaluate the first N clips only (0: all)")
    ap.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_device_argument(ap)
    add_released_arguments(ap)
    args = ap.parse_args(argv)
    try:
        model, cfg, _ = load_checkpoint(args.checkpoint, device=args.device, **released_overrides(args))
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    if model.tokenizer is None:
        ap.error(f"{args.checkpoint} has no Q-Former tokenizer, which retrieval reads texts with: "
                 "pass --qformer-tokenizer DIR (bert-base-uncased)")
    cfg = replace(cfg, eval=replace(cfg.eval, annotations=args.data, pairs=args.pairs, max_clips=args.max_clips),
                  data=replace(cfg.data, video_root=args.video_root, features="",  # decode the given videos
                               annotations=cfg.data.annotations or args.data))  # a released folder has no train set
    _, held_out = datasets(cfg, model)
    collate = make_collate(cfg, model.tokenizer)
    metrics, _ = evaluation(cfg, held_out, collate, captions=model.bridge is not None)(model, progress=True)
    print(json.dumps(metrics, indent=1) if args.json else format_metrics(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
