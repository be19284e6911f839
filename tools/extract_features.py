#!/usr/bin/env python
"""Run the frozen encoders once over a dataset and write their outputs to a feature cache.

Training then reads the cache with data.features=DIR (the encoders, their weights, the sampler and the
frame count must match, or the cache is refused). A killed run resumes: rerun the same command. The encoders
run on the GPU when torch sees one (with ``model.vision.dtype=auto``, in half precision there).

Examples:
  python tools/extract_features.py --config configs/synthetic.yaml --variant cascaded \\
      data.annotations=/data/synthetic/train.jsonl --out /data/synthetic/features
  python tools/extract_features.py --config configs/my_run.yaml --out feats --shard-size 64 data.num_frames=16
Any key of the experiment config is overridable as key.sub=value (see videoqf/experiment.py).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from videoqf.backends import BACKENDS  # noqa: E402
from videoqf.config import load_config  # noqa: E402
from videoqf.experiment import ExperimentConfig  # noqa: E402
from videoqf.models.frozen import build_frozen_encoders  # noqa: E402
from videoqf.recipes.features import ensure_features  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="experiment YAML (its model and data sections are used)")
    ap.add_argument("--variant", choices=sorted(BACKENDS),
                    help="also load configs/variants/VARIANT.yaml after --config")
    ap.add_argument("--out", required=True, help="cache directory (created; an existing one is resumed)")
    ap.add_argument("--batch-size", type=int, default=16, help="clips per encoder pass (default 16)")
    ap.add_argument("--shard-size", type=int, default=256, help="clips per safetensors shard (default 256)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    files = [Path(args.config)] + ([ROOT / "configs" / "variants" / f"{args.variant}.yaml"] if args.variant else [])
    # the frozen encoders alone make features: no LLM is built, and a variant file may name the projector of an LLM
    # whose path only the embedded default (tools/train_video.py) fills in
    cfg = load_config(ExperimentConfig, files, ["model.llm=null", *args.overrides])
    vision, audio = build_frozen_encoders(cfg.model)
    _, (stats,) = ensure_features(cfg.data, [cfg.data.annotations], vision, audio, out_dir=args.out,
                                  batch_size=args.batch_size, shard_size=args.shard_size,
                                  progress=not args.no_progress)
    print(f"{args.out}: {stats.clips} clips, {stats.written} written, {stats.skipped} already cached, "
          f"{len(stats.unreadable)} unreadable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
