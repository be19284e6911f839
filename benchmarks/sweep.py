"""All video backends side by side: cost and quality on the same data and seeds, each at its default's budget.

Every variant (cascaded, cascaded without audio / without temporal PE, spatiotemporal with and without
FFN experts, meanpool; the recipes that make sense on video: video-llama, video-qformer, framewise
(InstructBLIP-Video) and pooled (Video-ChatGPT), each also with the stability kit as NAME+kit; the chain:
blip2, then video-llama-init and video-qformer-init started from its run of the same seed (a chain's source is
trained first, and added when only the chain is asked for); and any backend later registered with a
configs/variants/NAME.yaml) is trained on the embedded synthetic default (tools/train_video.py: configs/synthetic.yaml + the
variant's YAML, data, caption LM and feature cache made once in $VIDEOQF_CACHE) for each seed, then
evaluated on held-out clips. Writes benchmarks/results/sweep.md (table, command, machine, date, and what
the numbers say about the expected effects against the seed spread) and benchmarks/results/sweep.png
(quality against backend FLOPs per clip). Finished cells are kept in --sweep-dir; a restart skips them.

    python benchmarks/sweep.py --quick                  # every variant x seeds 0,1, small budget
    python benchmarks/sweep.py                          # full budget (configs/synthetic.yaml, 300 held-out clips)
    python benchmarks/sweep.py --variants cascaded,cascaded-nope --seeds 0,1,2 stages.stage1.steps=100
    python benchmarks/sweep.py --variants video-llama-init,video-qformer-init,video-llama,video-qformer

Expected time on 2 CPU cores (1 torch thread per run), from calibration runs of single cells on a
loaded machine: --quick (60 + 30 steps at batch 16, 48 held-out clips) about 30-45 s per cell, 15-20 min
for 13 variants x 2 seeds, plus about 2 min the first time for each feature cache (with and without audio,
and video-llama's head-tail frames with 8 audio segments). The caption LM (128 positions, so framewise's
64 tokens + a caption fit) is the embedded default's. The full sweep took about 5-6 min per cell, 2.5 h for 13 x 2, when the
default was 400 + 300 steps on 1,000 clips (100 held out). The full budget is now each variant's embedded
default on 3,000 clips (300 held out): configs/synthetic.yaml's steps, except that configs/variants/cascaded.yaml
(and so the three cascaded columns) trains 1,500 stage-1 steps against 1,200, a little less stage-1 time on this
machine (2026-12-03). It is not yet timed as a sweep; benchmarks/RESULTS.md times one run of each default.
"""
from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS_DIR, write_result  # noqa: E402
from videoqf.recipes.synthetic import EMBEDDED_CLIPS, embedded_experiment  # noqa: E402
from videoqf.sweep.cells import BUDGETS, available_variants, run_sweep, select_variants  # noqa: E402
from videoqf.sweep.report import plot, report_body  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", help=f"comma-separated subset of {', '.join(available_variants())} (default: all)")
    ap.add_argument("--seeds", default="0,1", help="comma-separated train seeds (default: 0,1)")
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="full", help="stage steps and eval size")
    ap.add_argument("--quick", action="store_true", help="same as --budget quick")
    ap.add_argument("--sweep-dir", default="runs/sweep", help="where cells are saved and resumed from")
    ap.add_argument("--synthetic-clips", type=int, default=EMBEDDED_CLIPS, help="size of the embedded synthetic set")
    ap.add_argument("--repeats", type=int, default=5, help="timed train steps per variant")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides for every cell")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    budget = "quick" if args.quick else args.budget
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    result = run_sweep(select_variants(args.variants), seeds,
                       setup=partial(embedded_experiment, num_clips=args.synthetic_clips),
                       overrides=[*BUDGETS[budget], *args.overrides], sweep_dir=args.sweep_dir,
                       repeats=args.repeats, threads=args.threads)
    label = budget + (" (smoke budget: not for conclusions)" if budget == "quick" else "")
    body = report_body(result, budget=" ".join([label, *args.overrides]))
    md = write_result("sweep", "Video backends side by side (benchmarks/sweep.py)", body)
    png = plot(result, RESULTS_DIR / "sweep.png")
    print(md.read_text())
    print(f"wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
