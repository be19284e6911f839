#!/usr/bin/env python
"""Train a video Q-Former variant (stage 1: VTC/VTM/VTG; stage 2: captioning through a frozen LLM).

With no --config this runs the embedded default: the synthetic diagnostic world is generated (once, in
$VIDEOQF_CACHE or ~/.cache/videoqf), a tiny caption LM is pre-trained on it (once), then stage 1 and
stage 2 train tiny models and the held-out metrics and a few captions are printed. The model is
configs/variants/VARIANT.yaml (--variant) or a recipe of the Q-Former family, configs/recipes/NAME.yaml
(--recipe: blip2, instructblip, minigpt4, video-llama, video-qformer, video-chatgpt, domain), each layered
on configs/synthetic.yaml; a recipe's features are cached apart (its frames or encoder may differ).

Examples:
  python tools/train_video.py --variant cascaded
  python tools/train_video.py --recipe video-llama
  python tools/train_video.py --variant spatiotemporal stages.stage1_steps=100 train.micro_batch_size=16
  python tools/train_video.py --config configs/my_run.yaml --stage 2 --resume runs/cascaded-20261123-1200
  torchrun --nproc_per_node 2 tools/train_video.py --variant cascaded
Any key of the config is overridable as key.sub=value (see videoqf/experiment.py for the sections).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch.distributed as dist

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from videoqf.backends import BACKENDS  # noqa: E402
from videoqf.config import load_config  # noqa: E402
from videoqf.data.synthetic import SyntheticConfig  # noqa: E402
from videoqf.eval.report import format_metrics  # noqa: E402
from videoqf.experiment import ExperimentConfig  # noqa: E402
from videoqf.llm.config import CaptionLMConfig  # noqa: E402
from videoqf.recipes.features import config_digest, feature_digest  # noqa: E402
from videoqf.recipes.run import check_resumable, run_experiment  # noqa: E402
from videoqf.recipes.synthetic import cache_root, prepare_caption_lm, prepare_synthetic, synthetic_dir  # noqa: E402
from videoqf.train.engine import from_rank0, init_distributed  # noqa: E402

RECIPES = ROOT / "configs" / "recipes"
EMBEDDED_CLIPS = 3000  # size of the embedded synthetic world (a tenth held out), also the sweep's


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = ap.add_mutually_exclusive_group()
    model.add_argument("--variant", choices=sorted(BACKENDS),
                       help="registered video backend to train (default: cascaded; with --config: the config's)")
    model.add_argument("--recipe", choices=sorted(p.stem for p in RECIPES.glob("*.yaml")),
                       help="a recipe of configs/recipes/ on the embedded synthetic world")
    ap.add_argument("--config", help="experiment YAML; without it, the embedded synthetic default "
                                     "(configs/synthetic.yaml + the variant's or recipe's file)")
    ap.add_argument("--stage", choices=["1", "2", "both"], help="stages to run (default: the config's, 'both')")
    ap.add_argument("--resume", metavar="RUN_DIR", help="continue a run directory from its latest complete checkpoint")
    ap.add_argument("--allow-config-change", action="store_true",
                    help="with --resume: continue although the config changed in a way that breaks exact continuation")
    ap.add_argument("--run-dir", help="where checkpoints, logs and results go (default: runs/VARIANT-TIME)")
    ap.add_argument("--synthetic-clips", type=int, default=EMBEDDED_CLIPS, help="size of the embedded synthetic set")
    ap.add_argument("--persistent-objects", action="store_true",
                    help="embedded synthetic world: objects stay on screen to the end of the clip, so the captions "
                         "must also tell which object acted when (default: each is seen during its own event only)")
    ap.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    return ap.parse_args(argv)


def embedded_default(model_file: Path, num_clips: int, persistent_objects: bool = False) -> tuple[list[Path], list[str]]:
    """Config files and overrides of the synthetic default with ``model_file`` on top; its data and caption
    LM are made if missing."""
    world = SyntheticConfig(num=num_clips, seed=0, persistent_objects=persistent_objects)
    data = prepare_synthetic(synthetic_dir(world), world)
    lm_config = CaptionLMConfig()  # pre-trained on the world's captions, so named after it
    lm = prepare_caption_lm(data, cache_root() / f"caption-lm-{data.name}-{config_digest(lm_config)}", lm_config)
    files = [ROOT / "configs" / "synthetic.yaml", model_file]
    overrides = [f"data.annotations={data / 'train.jsonl'}", f"eval.annotations={data / 'test.jsonl'}",
                 f"eval.pairs={data / 'pairs.json'}", f"model.tokenizer={data}",
                 "model.llm.arch=causal", f"model.llm.path={lm}", "model.llm.video_dim=128"]
    return files, overrides


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    if args.resume:
        try:  # before any data is made or model built
            check_resumable(args.resume)
        except FileNotFoundError as err:
            raise SystemExit(f"--resume: {err}") from None
    if args.config:
        if args.recipe:
            raise SystemExit("--recipe runs on the embedded synthetic world; with --config give the recipe's file")
        files, overrides = [Path(args.config)], [f"model.variant={args.variant}"] if args.variant else []
    elif args.recipe:
        files, overrides = embedded_default(RECIPES / f"{args.recipe}.yaml", args.synthetic_clips,
                                            args.persistent_objects)
    else:
        files, overrides = embedded_default(ROOT / "configs" / "variants" / f"{args.variant or 'cascaded'}.yaml",
                                            args.synthetic_clips, args.persistent_objects)
    if args.stage:
        overrides.append(f"stages.stage={args.stage}")
    cfg = load_config(ExperimentConfig, files, overrides + list(args.overrides))
    if not args.config and not cfg.data.features:
        # the frozen encoders run once per clip, into a cache named after what its features depend on
        cfg = replace(cfg, data=replace(cfg.data, features=str(cache_root() / f"features-{feature_digest(cfg)}")))
    init_distributed()  # before naming the run directory: every rank must use rank 0's
    run_dir = Path(from_rank0(
        args.resume or args.run_dir or f"runs/{args.recipe or cfg.model.variant}-{time.strftime('%Y%m%d-%H%M%S')}"))
    metrics, samples = run_experiment(cfg, run_dir, resume=bool(args.resume),
                                      allow_config_change=args.allow_config_change)
    rank = dist.get_rank()
    dist.destroy_process_group()  # a gloo group left open makes the processes abort at exit
    if rank != 0:  # rank 0 evaluated and reports
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
    sys.exit(main())
