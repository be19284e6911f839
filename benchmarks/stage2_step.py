"""The embedded default's stage-2 step: the LLM's own head reading a full backend pass, its head inputs made
every step, or its head inputs kept per clip.

Stage 2 trains the projector, the top layer of the LLM's own head (and cascaded's audio branch). The LLM's own
head reads only the backend's head inputs and side tokens, so the backend's head pass can be left out
(``VideoLanguageModel.encode_for_llm``); and the frame Q-Former that makes the head's inputs is frozen, so
``CaptionLoss`` keeps them per training clip (``videoqf.models.head_inputs_memo``). One step is the caption
loss's forward and backward over a batch of cached features; the kept side has seen the batch once.
Interleaved repeats, medians.

    python benchmarks/stage2_step.py       # cascaded and spatiotemporal, batch 32, 1 torch thread

It builds the embedded default's model, so it makes the synthetic world, caption LM and feature cache in
$VIDEOQF_CACHE first if missing.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import embedded_model, variant_bench_args, write_result  # noqa: E402
from videoqf.measure import interleaved_medians  # noqa: E402
from videoqf.objectives.caption import CaptionLoss  # noqa: E402
from videoqf.recipes.run import datasets, make_collate  # noqa: E402


def main(argv=None) -> str:
    ap = variant_bench_args(__doc__, repeats=9)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = ["| variant | full backend pass (ms) | head inputs made every step (ms) | kept (ms) | speed-up, full / kept |",
             "|---|---:|---:|---:|---:|"]
    for variant in args.variants.split(","):
        torch.manual_seed(0)
        cfg, model = embedded_model(variant, "stage2")
        model.copy_head_for_llm()
        train, _ = datasets(cfg, model)
        batch = make_collate(cfg, model.tokenizer)([train[i] for i in range(args.batch)])
        model.train()
        made, kept = CaptionLoss(), CaptionLoss()
        made.memo.usable = False
        kept(model, batch)  # the memo checks the inputs are fixed and keeps them

        def through_backend(model, batch):  # what the LLM's own head read before the split
            prompts = batch.get("prompt")
            vt = model.encode_for_llm(batch, prompts, encoded=model.encode(batch))
            return {"loss": model.bridge(vt.tokens, vt.mask, batch["caption"], prompts).loss}

        def step(loss):
            def run():
                model.zero_grad(set_to_none=True)
                loss(model, batch)["loss"].backward()
            return run

        t = interleaved_medians({"full": step(through_backend), "made": step(made), "kept": step(kept)},
                                repeats=args.repeats)
        lines.append(f"| {variant} | {t['full'] * 1e3:.1f} | {t['made'] * 1e3:.1f} | {t['kept'] * 1e3:.1f} | "
                     f"{t['full'] / t['kept']:.2f}x |")
    body = (f"Batch {args.batch} of the embedded default's cached features, {args.threads} torch thread(s), forward "
            f"and backward of the caption loss, medians of {args.repeats} interleaved repeats.\n\n" + "\n".join(lines)
            + (f"\n\n{args.note}" if args.note else ""))
    print(body)
    if not args.no_write:
        write_result("stage2_step", "Stage-2 step: frozen head inputs made every step or kept per clip", body)
    return body


if __name__ == "__main__":
    main()
