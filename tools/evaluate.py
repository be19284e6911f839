#!/usr/bin/env python
"""Evaluate a checkpoint on held-out clips: retrieval R@1/5/10 (contrastive top-k, then matching rerank),
caption CIDEr / BLEU-4, and on the synthetic world order / sound accuracy on its paired clips.

  python tools/evaluate.py --checkpoint runs/cascaded-20261123-1200 --data test.jsonl --pairs pairs.json

--checkpoint takes any folder ``videoqf.pretrained.load_pretrained`` reads. A released folder has no
stage-1 heads of ours (they start fresh), so its retrieval figures say nothing until stage 1 trains them.
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
    from videoqf.pretrained.inference import load_checkpoint  # noqa: E402
    from videoqf.recipes.run import datasets, evaluation, make_collate  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="checkpoint, stage or run directory, or a transformers "
                    "BLIP-2 / InstructBLIP / InstructBLIP-Video folder")
    ap.add_argument("--qformer-tokenizer", help="a BERT tokenizer folder for a released BLIP-2 folder, which has "
                    "none (the texts of retrieval are the Q-Former's)")
    ap.add_argument("--data", required=True, help="annotation file of the held-out clips (JSONL, CSV, MSR-VTT JSON)")
    ap.add_argument("--video-root", help="folder that relative video paths resolve against")
    ap.add_argument("--pairs", default="", help="synthetic pairs.json (order / sound pairs)")
    ap.add_argument("--max-clips", type=int, default=0, help="evaluate the first N clips only (0: all)")
    ap.add_argument("--json", action="store_true", help="print the metrics as JSON")
    args = ap.parse_args(argv)
    model, cfg, _ = load_checkpoint(args.checkpoint, **({"qformer_tokenizer": args.qformer_tokenizer}
                                                        if args.qformer_tokenizer else {}))
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
