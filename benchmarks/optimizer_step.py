"""AdamW's step over the embedded default's stage-1 parameters: torch's per-tensor loop against its fused kernel.

The embedded default trains many small tensors (a 128-wide Q-Former's weights, biases and norms), where a
per-tensor optimizer pays per-tensor overhead; ``videoqf.train.optim.build_optimizer`` uses the fused kernel.
Gradients are random (the step's cost does not depend on them); steps are interleaved, medians.

    python benchmarks/optimizer_step.py       # cascaded and spatiotemporal, 1 torch thread

It builds the embedded default's model, so it makes the synthetic world in $VIDEOQF_CACHE first if missing.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import embedded_model, variant_bench_args, write_result  # noqa: E402
from videoqf.measure import interleaved_medians  # noqa: E402
from videoqf.train.optim import param_groups  # noqa: E402


def main(argv=None) -> str:
    args = variant_bench_args(__doc__, repeats=40).parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = ["| variant | tensors | parameters | per-tensor (ms) | fused (ms) | fused speed-up |",
             "|---|---:|---:|---:|---:|---:|"]
    for variant in args.variants.split(","):
        cfg, model = embedded_model(variant, "stage1")
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
