"""The embedded default against its floors: wall time, held-out retrieval and caption quality.

Runs ``python tools/train_video.py --variant V`` for each variant as a user would (the synthetic data,
caption LM and feature cache are made first if missing: with --cache-dir pointing at an empty folder the
wall time is a first run's on a fresh machine), and
writes the figures with pass / fail against the floors: wall time within 8 minutes on a 2-core machine (the
speed issue's floor; its goal is 5), text-to-video R@1 >= 0.5 on the held-out clips, and generated captions
naming the right events in the right order on at least half of them. Each run's time is split by where it went
(from the cache's markers and the stages' metrics.jsonl times), and a 2048 x 2048 matrix product's speed is
measured before and after, since a shared machine's speed moves from hour to hour.

    python benchmarks/default_run.py --variants cascaded,spatiotemporal
"""
from __future__ import annotations

import argparse
import os
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import matmul_flops, write_result  # noqa: E402
from videoqf.eval.synthetic import EVENT_SLOTS  # noqa: E402
from videoqf.recipes.run import RESULTS_NAME  # noqa: E402

FLOORS = {"wall_s": 480.0, "t2v_r1": 0.5, "caption_order_acc": 0.5}


def _stage_times(run_dir: Path) -> list[tuple[str, float, float]]:
    """(stage, first, last) Unix times of each stage's metrics.jsonl lines, in the order they ran."""
    spans = []
    for metrics in run_dir.glob("*/metrics.jsonl"):
        times = [json.loads(line).get("time") for line in metrics.read_text().splitlines() if line]
        if times and None not in times:
            spans.append((metrics.parent.name, times[0], times[-1]))
    return sorted(spans, key=lambda span: span[1])


def time_split(run_dir: Path, start: float, cache: Path | None) -> str:
    """Where a run's wall time went, as a table: the made world and caption LM (a cold run's markers in
    ``cache``), then each stage from its first to its last logged line, and what came between and after."""
    marks = [("start-up and the synthetic world", "synthetic-v*/.complete"),
             ("caption LM (the features beside it)", "caption-lm-*/.complete")] if cache else []
    rows, last = [], start
    for label, pattern in marks:
        found = sorted(cache.glob(pattern), key=lambda m: m.stat().st_mtime)
        if found and found[-1].stat().st_mtime > start:
            rows.append((label, found[-1].stat().st_mtime - last))
            last = found[-1].stat().st_mtime
    for name, first, end in _stage_times(run_dir):
        rows.append((f"before {name} (the features' rest, model, data, engine)", first - last))
        rows.append((f"{name} (its training, from setup to the last save)", end - first))
        last = end
    rows.append(("final evaluation and exit", (run_dir / RESULTS_NAME).stat().st_mtime - last))
    return "| part | s |\n|---|---:|\n" + "".join(f"| {label} | {secs:.0f} |\n" for label, secs in rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="cascaded,spatiotemporal")
    ap.add_argument("--runs", default="runs/default-bench", help="parent folder of the run directories")
    ap.add_argument("--cache-dir", help="VIDEOQF_CACHE for the runs (an empty folder times a cold first run)")
    ap.add_argument("overrides", nargs="*", help="key.sub=value passed to train_video.py")
    args = ap.parse_args(argv)
    env = dict(os.environ)
    cold = False
    if args.cache_dir:
        cold = not Path(args.cache_dir).exists() or not any(Path(args.cache_dir).iterdir())
        env["VIDEOQF_CACHE"] = args.cache_dir
    rows, splits = [], []
    speed = [matmul_flops()]
    for variant in args.variants.split(","):
        run_dir = Path(args.runs) / f"{variant}-{time.strftime('%Y%m%d-%H%M%S')}"
        start = time.time()
        subprocess.run([sys.executable, str(ROOT / "tools" / "train_video.py"), "--variant", variant,
                        "--run-dir", str(run_dir), *args.overrides], check=True, env=env)
        wall = time.time() - start
        metrics = json.loads((run_dir / RESULTS_NAME).read_text())["metrics"]
        rows.append((variant, wall, metrics))
        splits.append(f"{variant}:\n\n" + time_split(run_dir, start, Path(args.cache_dir) if cold and not splits
                                                         else None))
    speed.append(matmul_flops())
    lines = ["| variant | held-out clips | wall (s) | t2v R@1 | v2t R@1 | t2v R@5 | caption order acc | caption sound acc | CIDEr | "
             "event word acc | head: caption order acc | head: event word acc | order pair acc | LLM: order pair acc | "
             "LLM: sound pair acc | floors met |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for variant, wall, m in rows:
        met = [wall <= FLOORS["wall_s"], m["t2v_r1"] >= FLOORS["t2v_r1"],
               m.get("caption_order_acc", 0.0) >= FLOORS["caption_order_acc"]]
        lines.append(f"| {variant} | {m['clips']} | {wall:.0f} | {m['t2v_r1']:.3f} | {m['v2t_r1']:.3f} | {m['t2v_r5']:.3f} | "
                     f"{m.get('caption_order_acc', float('nan')):.3f} | {m.get('caption_sound_acc', float('nan')):.3f} | "
                     f"{m.get('cider', float('nan')):.3f} | {m.get('event_word_acc', float('nan')):.3f} | "
                     f"{m.get('head_caption_order_acc', float('nan')):.3f} | "
                     f"{m.get('head_event_word_acc', float('nan')):.3f} | {m.get('order_pair_acc', float('nan')):.3f} | "
                     f"{m.get('lm_order_pair_acc', float('nan')):.3f} | {m.get('lm_sound_pair_acc', float('nan')):.3f} | "
                     f"{'yes' if all(met) else 'no'} |")
    places = [f"| variant | {' | '.join(EVENT_SLOTS)} | {' | '.join(f'head: {slot}' for slot in EVENT_SLOTS)} |",
              "|---|" + "---:|" * (2 * len(EVENT_SLOTS))]
    for variant, _, m in rows:
        values = [m.get(f"{prefix}event_{slot}_acc", float("nan")) for prefix in ("", "head_") for slot in EVENT_SLOTS]
        places.append(f"| {variant} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    body = (f"Floors: wall time <= {FLOORS['wall_s']:.0f} s on a 2-core machine, t2v R@1 >= 0.5 (chance 1 / "
            "held-out clips), caption order accuracy >= 0.5. "
            "Captions are the frozen LM's (stage 2); 'head:' columns are the head Q-Former's own greedy VTG "
            "decoding (stage 1's grounding); event word acc is the share of the events' words in place. Pair accuracies "
            "(both clips of a pair told apart, ties wrong, chance about 0.25) are scored by the matching head, and "
            "'LLM:' ones by the caption's log-likelihood under the frozen LM, which alone hears the audio. "
            "Wall time includes start-up and evaluation; "
            + ("the first variant's run started from an EMPTY cache (synthetic set, caption LM and feature cache "
               "made in it)" if cold else "the synthetic set, caption LM and feature cache already existed")
            + ".\n\n" + "\n".join(lines)
            + "\n\nThe events' words in place by word place (`event_<place>_acc`, over all held-out events): "
            "\"a red square moves left\" has colour, shape, action and detail (the direction of \"moves\", the "
            "new colour of \"turns\"; \"appears\" has none). Chance: colour 0.25, shape and action 0.33, "
            "detail 0.25 (direction) or 0.33 (new colour).\n\n" + "\n".join(places)
            + "\n\nWhere the time went:\n\n" + "\n".join(splits)
            + f"\nThe machine's speed, a 2048 x 2048 float32 matrix product at {torch.get_num_threads()} torch "
            f"threads: {speed[0] / 1e9:.0f} GFLOP/s before the runs, {speed[1] / 1e9:.0f} after.")
    print(body)
    first = rows[0][0]  # a first run is written per variant that paid for the cache, so both kinds of run are kept
    print("wrote", write_result(f"default_run-cold-{first}" if cold else "default_run",
                                "The embedded default (tools/train_video.py)"
                                + (f", first run ({first} from an empty cache)" if cold else ""), body))


if __name__ == "__main__":
    main()
