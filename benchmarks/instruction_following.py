#!/usr/bin/env python
"""Does the instructblip recipe follow instructions? Its instruct stage, started from a blip2 run, asked each task's
question on the held-out clips of the embedded world: accuracy against chance (videoqf/eval/instructions.py).

Usage: python benchmarks/instruction_following.py --run DIR --blip2 BLIP2_RUN [--steps 800] [train.num_threads=1 ...]
The run is trained first (``tools/train_video.py --recipe instructblip --stage instruct model.init_from=BLIP2_RUN``)
unless DIR already holds its results.json.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from videoqf.data.synthetic.instructions import TASKS  # noqa: E402
from videoqf.eval.instructions import instruction_accuracy  # noqa: E402
from videoqf.recipes.checkpoint_model import load_model  # noqa: E402
from videoqf.recipes.run import RESULTS_NAME, datasets, make_collate  # noqa: E402

NOTE = ("The instructblip recipe's instruct stage ({steps} steps; Q-Former and projection train, the instruction in "
        "the Q-Former's text branch and the LLM prompt), started from the blip2 run {blip2}. Exact match of the LLM's "
        "greedy answer. Chance: the most common answer's share (sound, colour, caption); for order, one of the clip's "
        "own events at random. The framewise model has no audio path, so its sound answers can only be guessed.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="the instructblip run folder (trained here when it has no results)")
    ap.add_argument("--blip2", required=True, help="the blip2 run it starts from (model.init_from)")
    ap.add_argument("--steps", type=int, default=800, help="steps of the instruct stage")
    ap.add_argument("overrides", nargs="*", help="config overrides of the run (e.g. train.num_threads=1)")
    args = ap.parse_args(argv)
    run = Path(args.run)
    if not (run / RESULTS_NAME).is_file():
        subprocess.run([sys.executable, str(ROOT / "tools/train_video.py"), "--recipe", "instructblip", "--stage",
                        "instruct", "--run-dir", str(run), f"model.init_from={args.blip2}",
                        f"stages.instruct.steps={args.steps}", "train.progress_bar=false", *args.overrides], check=True)
    model, cfg, _ = load_model(run)
    _, held_out = datasets(cfg, model)
    tasks = cfg.stages["instruct"].tasks
    scores = instruction_accuracy(model, held_out, make_collate(cfg, model.tokenizer), tasks,
                                  max_new_tokens=cfg.eval.max_new_tokens)
    lines = ["| task | question | held-out clips | accuracy | chance |", "|---|---|---:|---:|---:|"]
    for task, s in scores.items():
        lines.append(f"| {task} | {TASKS[task][0]} | {s['clips']} | {s['accuracy']:.3f} | {s['chance']:.3f} |")
        print(task, s, flush=True)
    body = NOTE.format(steps=args.steps, blip2=args.blip2) + "\n\n" + "\n".join(lines)
    write_result("instruction_following", "Instruction following: the instructblip recipe on held-out clips", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
