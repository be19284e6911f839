"""AdamW's step over the embedded default's stage-1 parameters: torch's per-tensor loop against its fused kernel.

The embedded default trains many small tensors (a 128-wide Q-Former's weights, biases and norms), where a
per-tensor optimizer pays per-tensor overhead; ``videoqf.train.optim.build_optimizer`` uses the fused kernel.
Gradients are random (the step's cost does not depend on them); steps are interleaved, medians.

    python benchmarks/optimizer_step.py       # cascaded and spatiotemporal, 1 torch thread

It builds the embedded default's model, so it makes the synthetic world in $VIDEOQF_CACHE first if missing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_result  # noqa: E402
from videoqf.llm.tokenizer import load_tokenizer  # noqa: E402
from videoqf.measure import interleaved_medians  # noqa: E402
from videoqf.models.groups import lock  # noqa: E402
from videoqf.models.video_lm import VideoLanguageModel  # noqa: E402
from videoqf.recipes.synthetic import CONFIGS, embedded_experiment  # noqa: E402
from videoqf.train.optim import param_groups  # noqa: E402


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="cascaded,spatiotemporal")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--note", default="", help="a line on the machine's state (e.g. other jobs running)")
    ap.add_argument("--no-write", action="store_true", help="print the table without writing results/")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = ["| variant | tensors | parameters | per-tensor (ms) | fused (ms) | fused speed-up |",
             "|---|---:|---:|---:|---:|---:|"]
    for variant in args.variants.split(","):
        cfg = embedded_experiment(CONFIGS / "variants" / f"{variant}.yaml", [])
        model = VideoLanguageModel(cfg.model, load_tokenizer(cfg.model.tokenizer))
        lock(model, cfg.stages["stage1"].train, cfg.stages["stage1"].freeze, where="stages.stage1")
        params = [p for g in param_groups(model, cfg.train) for p in g["params"]]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        steps = {name: torch.optim.AdamW(param_groups(model, cfg.train), lr=1e-5, fused=fused).step
                 for name, fused in (("per-tensor", False), ("fused", True))}
        t = interleaved_medians(steps, repeats=args.repeats)
        lines.append(f"| {variant} | {len(params)} | {sum(p.numel() for p in params):,} | {t['per-tensor'] * 1e3:.2f} | "
                     f"{t['fused'] * 1e3:.2f} | {t['per-tensor'] / t['fused']:.2f}x |")
    body = "\n".join(lines) + (f"\n\n{args.note}" if args.note else "")
    print(body)
    if not args.no_write:
        write_result("optimizer_step", "AdamW step over the embedded default's stage-1 parameters", body)
    return body


if __name__ == "__main__":
    main()
