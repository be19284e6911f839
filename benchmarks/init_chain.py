#!/usr/bin/env python
"""Do image weights help the video models here? The chain blip2 -> video-llama / video-qformer against the same
recipes from scratch at the same total number of training steps, on the embedded synthetic world.

    blip2                         I1 + I2 steps on one frame per clip (the image "pre-training")
    video-llama   init_from=blip2 S1 + S2 steps (frame Q-Former frozen, as Video-LLaMA)
    video-qformer init_from=blip2 S1 + S2 steps
    video-llama   from scratch    (I1 + S1) + (I2 + S2) steps (frame Q-Former trained: frozen at random it would
                                  be no baseline)
    video-qformer from scratch    (I1 + S1) + (I2 + S2) steps

Each arm is one ``tools/train_video.py`` process, one after another; an arm whose run folder already holds
``results.json`` is read, not rerun. Held-out figures to results/init_chain.md (and RESULTS.md).

Usage: python benchmarks/init_chain.py --runs DIR [--image 600,400] [--video 600,400] [train.num_threads=1 ...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from videoqf.recipes.run import RESULTS_NAME  # noqa: E402

COLUMNS = [("t2v_r1", "t2v R@1"), ("v2t_r1", "v2t R@1"), ("caption_order_acc", "caption order acc"),
           ("caption_sound_acc", "caption sound acc"), ("event_word_acc", "event word acc"), ("cider", "CIDEr"),
           ("order_pair_acc", "order pair acc")]


def steps(stage1: int, stage2: int) -> list[str]:
    return [f"stages.stage1.steps={stage1}", f"stages.stage2.steps={stage2}"]


def arms(runs: Path, image: tuple[int, int], video: tuple[int, int]) -> list[tuple[str, str, list[str]]]:
    """(name, recipe, overrides) in the order they run; the init arms read the blip2 run."""
    init = [f"model.init_from={runs / 'blip2'}"]
    whole = steps(image[0] + video[0], image[1] + video[1])
    return [("blip2", "blip2", steps(*image)),
            ("video-llama-init", "video-llama", steps(*video) + init),
            ("video-qformer-init", "video-qformer", steps(*video) + init),
            ("video-llama-scratch", "video-llama", whole + ["stages.stage1.freeze=[]"]),
            ("video-qformer-scratch", "video-qformer", whole)]


def run_arm(run_dir: Path, recipe: str, overrides: list[str], log: Path) -> dict:
    if not (run_dir / RESULTS_NAME).is_file():
        command = [sys.executable, str(ROOT / "tools/train_video.py"), "--recipe", recipe, "--run-dir", str(run_dir),
                   "train.progress_bar=false", *overrides]
        with log.open("w") as out:
            subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT)
    return json.loads((run_dir / RESULTS_NAME).read_text())["metrics"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="folder of the arms' run folders (and their logs)")
    ap.add_argument("--image", default="600,400", help="stage-1,stage-2 steps of the blip2 run")
    ap.add_argument("--video", default="600,400", help="stage-1,stage-2 steps of a video run started from it")
    ap.add_argument("overrides", nargs="*", help="config overrides for every arm (e.g. train.num_threads=1)")
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    image, video = (tuple(int(n) for n in arg.split(",")) for arg in (args.image, args.video))
    runs.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, recipe, overrides in arms(runs, image, video):
        metrics = run_arm(runs / name, recipe, [*overrides, *args.overrides], runs / f"{name}.log")
        steps = sum(int(o.split("=")[1]) for o in overrides if ".steps=" in o)
        rows.append((name, steps, metrics))
        print(name, {k: metrics.get(k) for k, _ in COLUMNS}, flush=True)
    head = "| arm | steps of this run | " + " | ".join(t for _, t in COLUMNS) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(COLUMNS)]
    for name, steps, metrics in rows:
        cells = [f"{metrics[k]:.3f}" if k in metrics else "-" for k, _ in COLUMNS]
        lines.append(f"| {name} | {steps} | " + " | ".join(cells) + " |")
    body = (f"Held-out clips of the embedded world (a tenth of 3000). Each init arm's total budget is the blip2 run's "
            f"steps plus its own ({sum(image) + sum(video)}), as each scratch arm's; the blip2 steps see one frame per "
            "clip, so they cost less than a video step. The steps are fewer than the embedded default's 1200 + 800 a "
            "run, alike for every arm, so that the five runs fit a 2-core CPU shared with other jobs (one torch thread "
            "each). One seed per arm. The scratch video-llama arm trains its frame Q-Former (stages.stage1.freeze=[]): "
            "frozen at its random init it would be no baseline.\n\n" + "\n".join(lines))
    write_result("init_chain", "Video models from image weights: the blip2 chain vs from scratch", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
