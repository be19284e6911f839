"""All video backends side by side: cost and quality on the same data and seeds, each at the sweep's standard budget.

Every variant is trained on the embedded synthetic default (tools/train_video.py: configs/synthetic.yaml + the
variant's YAML, data, caption LM and feature cache made once in $VIDEOQF_CACHE), for the sweep's own stage steps
(videoqf.sweep.cells.SWEEP_STEPS, not the default's), for each seed, then evaluated on
held-out clips, once after stage 1 (the forgetting column) and once at the end. The variants:
- cascaded, and without audio, without temporal PE, with 8 frame queries against 4, with the stability kit
  (NAME+kit) and without gradient clipping and warm-up (NAME-bare);
- spatiotemporal, and without FFN experts, with roles (only T-FFN's and SM-FFN's queries read time), without
  attentive pooling, without temporal PE, +kit, -bare;
- meanpool; with cascaded-nope the shortcut check (no temporal position: order must sit at chance);
- the recipes that make sense on video: video-llama, video-qformer, framewise (InstructBLIP-Video), pooled
  (Video-ChatGPT), each also +kit;
- the chain: blip2, then video-llama-init and video-qformer-init started from its run of the same seed (a
  chain's source is trained first, and added when only the chain is asked for);
- any backend later registered with a configs/variants/NAME.yaml.
--persistent-objects runs all of it on the world where the objects stay on screen, each event an excursion (its
object back at rest after it), so order shows in time only.
Writes benchmarks/results/sweep.md (sweep-persistent.md) with the table, command, machine, date and what the
numbers say against the seed spread, and a PNG of quality against backend FLOPs per clip. Runs are kept in
--sweep-dir, a restart resumes a half-run cell from its last finished stage. Each finished cell's record is kept
in --cells; at the standard budget that is benchmarks/results/sweep-cells/<world>, under version control, so a
sweep goes on across machines and sittings: commit the records as they come, and a restart skips them.

    python benchmarks/sweep.py --quick                  # every variant x seeds 0,1, smoke budget
    python benchmarks/sweep.py --seeds 0,1,2            # the standard budget: the sweep's pinned steps
    python benchmarks/sweep.py --seeds 0,1,2 --persistent-objects
    python benchmarks/sweep.py --variants cascaded,cascaded-nope --seeds 0,1,2 stages.stage1.steps=100

The standard budget ("full") is the embedded world of 3,000 clips (300 held out) and the sweep's pinned steps:
1,200 stage-1 steps (1,500 for the cascaded rows) and 800 stage-2 steps at batch 32, today the embedded default's
too. A cell took 11-15 min on one core of a
2-core Xeon with another cell on the other (cascaded 650-750 s, spatiotemporal 700-850 s, video-llama
1,030-1,170 s), so the 25 rows x 3 seeds x 2 worlds are about 17 h of two cores (--status estimates what is
left); --quick (60 + 30 steps at batch 16, 48 held-out clips) about 30-45 s.
Two invocations over disjoint --variants with the same --sweep-dir share the cores; the report of the last one
lists its own variants, so write the whole table by running once more over the finished ones.
"""
from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS_DIR, write_result  # noqa: E402
from videoqf.data.synthetic.generate import world_version  # noqa: E402
from videoqf.recipes.synthetic import EMBEDDED_CLIPS, cache_root, embedded_experiment  # noqa: E402
from videoqf.sweep.cells import BUDGETS, available_variants, recorded, run_sweep, select_variants  # noqa: E402
from videoqf.sweep.report import plot, report_body  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", help=f"comma-separated subset of {', '.join(available_variants())} (default: all)")
    ap.add_argument("--seeds", default="0,1", help="comma-separated train seeds (default: 0,1)")
    ap.add_argument("--budget", choices=sorted(BUDGETS), default="full", help="stage steps and eval size")
    ap.add_argument("--quick", action="store_true", help="same as --budget quick")
    ap.add_argument("--sweep-dir", help="where the cells' runs and costs are kept, a half-run cell resuming from it "
                                        "(default: runs/sweep, or runs/sweep-persistent with --persistent-objects)")
    ap.add_argument("--cells", help="where finished cells' records are kept (default: at the standard budget with no "
                                    "overrides, benchmarks/results/sweep-cells/<world>; otherwise the sweep dir)")
    ap.add_argument("--status", action="store_true",
                    help="list the cells recorded and left, with the cell time spent and left; train nothing")
    ap.add_argument("--synthetic-clips", type=int, default=EMBEDDED_CLIPS, help="size of the embedded synthetic set")
    ap.add_argument("--persistent-objects", action="store_true",
                    help="the persistent-objects world: objects stay on screen, back at rest after their event, so "
                         "order can only come from time")
    ap.add_argument("--repeats", type=int, default=5, help="timed train steps per variant")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides for every cell")
    return ap.parse_args(argv)


def print_status(records: Path, variants, seeds: list[int]) -> None:
    """Each variant's recorded and left seeds, and the cell time spent and, at the recorded cells' pace, left."""
    done = recorded(records, variants, seeds)
    walls = {v: [json.loads((records / v / f"seed{s}.json").read_text())["wall_s"] for s in got]
             for v, got in done.items()}
    left = {v: [s for s in seeds if s not in got] for v, got in done.items()}
    for v, got in done.items():
        took = f" ({sum(walls[v]) / 60:.0f} min)" if got else ""
        print(f"{v}: recorded seeds {got or '-'}{took}, left {left[v] or '-'}")
    cells_left = sum(len(s) for s in left.values())
    print(f"{cells_left} of {len(seeds) * len(done)} cells left (records in {records})")
    spent = [w for ws in walls.values() for w in ws]
    if spent:
        pace = sum(spent) / len(spent)
        ahead = sum(len(left[v]) * (sum(ws) / len(ws) if ws else pace) for v, ws in walls.items())
        print(f"recorded cells took {sum(spent) / 3600:.1f} h of cell time; the cells left, at each variant's mean "
              f"(the mean of all where none is recorded), about {ahead / 3600:.1f} h of cell time")


def main(argv=None) -> int:
    args = parse_args(argv)
    budget = "quick" if args.quick else args.budget
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    name = "sweep-persistent" if args.persistent_objects else "sweep"
    standard = budget == "full" and not args.overrides and args.synthetic_clips == EMBEDDED_CLIPS
    world = world_version(args.persistent_objects)
    cells = args.cells or (RESULTS_DIR / "sweep-cells" / f"{name}-v{world}" if standard else None)
    sweep_dir = args.sweep_dir or f"runs/{name}"
    if args.status:
        print_status(Path(cells or sweep_dir), select_variants(args.variants), seeds)
        return 0
    result = run_sweep(select_variants(args.variants), seeds,
                       setup=partial(embedded_experiment, num_clips=args.synthetic_clips,
                                     persistent_objects=args.persistent_objects),
                       overrides=[*BUDGETS[budget], *args.overrides], sweep_dir=sweep_dir,
                       records_dir=cells, roots=[cache_root()], repeats=args.repeats, threads=args.threads)
    label = budget + (" (smoke budget: not for conclusions)" if budget == "quick" else "")
    label += f"; world v{world}, " + ("persistent objects" if args.persistent_objects else "own-event objects")
    body = report_body(result, budget=" ".join([label, *args.overrides]), name=name)
    md = write_result(name, "Video backends side by side (benchmarks/sweep.py"
                      + (", persistent-objects world)" if args.persistent_objects else ")"), body)
    png = plot(result, RESULTS_DIR / f"{name}.png")
    print(md.read_text())
    print(f"wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
