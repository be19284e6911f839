#!/usr/bin/env python
"""Train a video Q-Former variant (stage 1: VTC/VTM/VTG; stage 2: captioning through a frozen LLM).

With no --config this runs the embedded default: the synthetic diagnostic world is generated (once, in
$VIDEOQF_CACHE or ~/.cache/videoqf), a tiny caption LM is pre-trained on it (once), then stage 1 and
stage 2 train tiny models and the held-out metrics and a few captions are printed. The model is
configs/variants/VARIANT.yaml (--variant) or a recipe of the Q-Former family, configs/recipes/NAME.yaml
(--recipe: blip2, instructblip, minigpt4, video-llama, video-qformer, video-chatgpt, domain), each layered
on configs/synthetic.yaml; a recipe's features are cached apart (its frames or encoder may differ).
A config's `stages:` lists the training stages in order (objective, steps, lr, the parameter groups that train).
model.init_from=DIR starts the model from an image checkpoint (the blip2 recipe's run, a saved image model): what
is copied and what is new is printed and kept in the run folder's init_from.json.

Examples:
  python tools/train_video.py --variant cascaded
  python tools/train_video.py --recipe blip2 --run-dir runs/blip2
  python tools/train_video.py --recipe video-llama model.init_from=runs/blip2
  python tools/train_video.py --recipe instructblip model.init_from=runs/blip2 --stage instruct
  python tools/train_video.py --variant spatiotemporal stages.stage1.steps=100 train.micro_batch_size=16
  python tools/train_video.py --config configs/my_run.yaml --stage stage2 --resume runs/cascaded-20261123-1200
  torchrun --nproc_per_node 2 tools/train_video.py --variant cascaded
Any key of the config is overridable as key.sub=value (see videoqf/experiment.py for the sections).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from videoqf.backends import BACKENDS  # noqa: E402
from videoqf.config import ConfigError  # noqa: E402
from videoqf.eval.report import format_metrics  # noqa: E402
from videoqf.experiment import load_experiment  # noqa: E402
from videoqf.recipes.run import check_resumable, run_experiment  # noqa: E402
from videoqf.recipes.synthetic import CONFIGS, EMBEDDED_CLIPS, embedded_experiment  # noqa: E402
from videoqf.train.engine import (end_process, from_rank0, init_distributed, is_main_process,  # noqa: E402
                                  shutdown_distributed)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = ap.add_mutually_exclusive_group()
    model.add_argument("--variant", choices=sorted(BACKENDS),
                       help="registered video backend to train (default: cascaded; with --config: the config's)")
    model.add_argument("--recipe", choices=sorted(p.stem for p in (CONFIGS / "recipes").glob("*.yaml")),
                       help="a recipe of configs/recipes/ on the embedded synthetic world")
    ap.add_argument("--config", help="experiment YAML; without it, the embedded synthetic default "
                                     "(configs/synthetic.yaml + the variant's or recipe's file)")
    ap.add_argument("--stage", metavar="NAME[,NAME]",
                    help="stages to run, by name (e.g. stage2); default: all of the config's stages")
    ap.add_argument("--resume", metavar="RUN_DIR", help="continue a run directory from its latest complete checkpoint")
    ap.add_argument("--allow-config-change", action="store_true",
                    help="with --resume: continue although the config changed in a way that breaks exact continuation")
    ap.add_argument("--run-dir", help="where checkpoints, logs and results go (default: runs/VARIANT-TIME)")
    ap.add_argument("--synthetic-clips", type=int, default=EMBEDDED_CLIPS, help="size of the embedded synthetic set")
    ap.add_argument("--persistent-objects", action="store_true",
                    help="embedded synthetic world: objects that move or turn stay on screen all along, back at rest "
                         "after their event, so the captions must also tell which object acted when (default: each "
                         "is seen during its own event only)")
    ap.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    if args.resume:
        try:  # before any data is made or model built
            check_resumable(args.resume)
        except FileNotFoundError as err:
            raise SystemExit(f"--resume: {err}") from None
    overrides = list(args.overrides) + ([f"run_stages=[{args.stage}]"] if args.stage else [])
    if args.config and args.recipe:
        raise SystemExit("--recipe runs on the embedded synthetic world; with --config give the recipe's file")
    try:
        if args.config:
            variant = [f"model.variant={args.variant}"] if args.variant else []
            cfg = load_experiment([args.config], variant + overrides)
        else:
            model_file = (CONFIGS / "recipes" / f"{args.recipe}.yaml" if args.recipe else
                          CONFIGS / "variants" / f"{args.variant or 'cascaded'}.yaml")
            cfg = embedded_experiment(model_file, overrides, num_clips=args.synthetic_clips,
                                      persistent_objects=args.persistent_objects)
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    init_distributed()  # before naming the run directory: every rank must use rank 0's
    run_dir = Path(from_rank0(
        args.resume or args.run_dir or f"runs/{args.recipe or cfg.model.variant}-{time.strftime('%Y%m%d-%H%M%S')}"))
    metrics, samples = run_experiment(cfg, run_dir, resume=bool(args.resume),
                                      allow_config_change=args.allow_config_change)
    main_process = is_main_process()
    shutdown_distributed()
    if not main_process:  # rank 0 evaluated and reports
        return 0
    if metrics:
        print(f"\n{cfg.model.variant}: held-out metrics ({cfg.eval.annotations})\n")
        print(format_metrics(metrics))
    else:
        print(f"\n{cfg.model.variant}: not evaluated (eval.annotations is empty)")
    for sample in samples[: cfg.eval.captions_shown]:
        lines = [f"\n{Path(sample['path']).name}", f"  reference: {sample['reference']}"]
        if "generated" in sample:  # the LLM's caption: only a run that trained stage 2 has one
            lines.append(f"  generated: {sample['generated']}")
        lines.append(f"  head:      {sample['head']}  (the head Q-Former's own VTG decoding)")
        print("\n".join(lines))
    print(f"\nrun directory: {run_dir}  (checkpoints in {run_dir}/stage*/checkpoints; "
          f"caption with: python tools/caption.py VIDEO --checkpoint {run_dir})")
    print(f"wall time: {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    end_process(main())
