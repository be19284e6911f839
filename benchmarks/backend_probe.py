"""How much of the synthetic world a video backend learns when told it directly: a ceiling for stage 1.

Trains a backend of the embedded default from the cached frozen-encoder features with a linear read-out
of its head's query outputs (all of them, flattened) for each event slot and attribute (the labels of
``benchmarks/encoder_probe.py``: colour, shape and action of events 1-3), by cross-entropy, and reports
held-out and training accuracy as it goes. A caption is right only when every attribute of every event
is, so this tells apart what limits the caption floor: the backend and the number of training clips
(this probe), or the objectives that must teach the same content through text (VTC / VTM / VTG).

    python benchmarks/backend_probe.py                                # cascaded, 1200 steps, 1,000 clips
    python benchmarks/backend_probe.py --synthetic-clips 3000         # more training clips (made if missing)
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_result  # noqa: E402
from videoqf.eval.probes import ATTRIBUTES, CLASSES, SLOTS, event_labels, probe_loss  # noqa: E402
from videoqf.llm.tokenizer import load_tokenizer  # noqa: E402
from videoqf.models.groups import lock  # noqa: E402
from videoqf.models.video_lm import VideoLanguageModel  # noqa: E402
from videoqf.recipes.run import datasets, fit_feature_statistics, make_collate  # noqa: E402
from videoqf.recipes.synthetic import embedded_experiment  # noqa: E402
from videoqf.sweep.cells import select_variants, variant_config  # noqa: E402
from videoqf.train.optim import build_optimizer, build_scheduler  # noqa: E402


class BackendProbe(nn.Module):
    """The model's backend and one linear read-out per (event slot, attribute) of its head queries."""

    def __init__(self, model: VideoLanguageModel, width: int):
        super().__init__()
        self.model = model
        self.readouts = nn.ModuleList(nn.Linear(width, n) for _ in range(SLOTS) for n in CLASSES)

    def forward(self, batch: dict) -> list[torch.Tensor]:
        queries = self.model.encode(batch).contrastive_tokens.flatten(1)
        return [readout(queries) for readout in self.readouts]


def labelled(dataset, collate) -> tuple[dict, torch.Tensor]:
    """Every item of ``dataset`` in one batch, and its labels [items, SLOTS * len(ATTRIBUTES)]."""
    items = [dataset[i] for i in tqdm(range(len(dataset)), desc="reading features")]
    labels = torch.tensor([event_labels(dataset.record(i).meta) for i in range(len(dataset))])
    return collate(items), labels


def take(batch: dict, index: torch.Tensor) -> dict:
    """The rows ``index`` of a batch; batch-wide entries (the skipped-clip counts) are kept whole."""
    return {k: v[index] if torch.is_tensor(v) else [v[i] for i in index.tolist()] if isinstance(v, list) else v
            for k, v in batch.items()}


@torch.no_grad()
def accuracies(probe: BackendProbe, batch: dict, labels: torch.Tensor) -> list[float]:
    """Accuracy per (slot, attribute) over the items that have the slot."""
    probe.eval()
    outputs = probe(batch)
    probe.train()
    return [(o.argmax(1) == labels[:, j])[labels[:, j] >= 0].double().mean().item() for j, o in enumerate(outputs)]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="cascaded", help="a variant of benchmarks/sweep.py (default cascaded)")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=1.5e-3, help="peak lr (stage 1's of the embedded default)")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--synthetic-clips", type=int, default=1000, help="size of the embedded synthetic set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="print the table without writing results/")
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    args = ap.parse_args(argv)
    variant = select_variants(args.variant)[0]
    cfg, _ = variant_config(variant, args.seed, partial(embedded_experiment, num_clips=args.synthetic_clips),
                            args.overrides)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(args.seed)
    model = VideoLanguageModel(cfg.model, load_tokenizer(cfg.model.tokenizer))
    train, held_out = datasets(cfg, model)
    collate = make_collate(cfg, model.tokenizer)
    fit_feature_statistics(model, train, collate, cfg.model.standardize_clips)
    train_batch, train_y = labelled(train, collate)
    test_batch, test_y = labelled(held_out, collate)
    with torch.no_grad():
        width = model.encode(take(test_batch, torch.arange(1))).contrastive_tokens[0].numel()
    probe = BackendProbe(model, width)
    lock(model, ["backend"], where="backend probe")  # the read-outs train too (new modules)
    tcfg = replace(cfg.train, lr=args.lr)
    optimizer = build_optimizer(probe, tcfg)
    scheduler = build_scheduler(optimizer, tcfg, args.steps)
    generator = torch.Generator().manual_seed(args.seed)
    seen = torch.arange(min(len(train_y), len(test_y) * 2))  # the training clips scored beside the held-out ones
    seen_batch, seen_y = take(train_batch, seen), train_y[seen]
    rows, start = [], time.time()
    bar = tqdm(range(1, args.steps + 1), desc=f"{args.variant} probe")
    for step in bar:
        index = torch.randint(0, len(train_y), (tcfg.micro_batch_size,), generator=generator)
        loss = probe_loss(probe(take(train_batch, index)), train_y[index])
        optimizer.zero_grad()
        loss.backward()
        if tcfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(probe.parameters(), tcfg.grad_clip)
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % args.eval_every == 0 or step == args.steps:
            held = accuracies(probe, test_batch, test_y)
            trained = accuracies(probe, seen_batch, seen_y)
            rows.append((step, held, sum(trained) / len(trained)))
            bar.write(f"step {step}: held-out mean {sum(held) / len(held):.3f}, training {rows[-1][2]:.3f}")
    head = " | ".join(f"{a} {k + 1}" for k in range(SLOTS) for a in ATTRIBUTES)
    lines = [f"| step | {head} | held-out mean | training mean |", "|---:|" + "---:|" * (SLOTS * len(ATTRIBUTES) + 2)]
    chance = [1 / n for n in CLASSES] * SLOTS
    lines.append("| chance | " + " | ".join(f"{a:.2f}" for a in chance) + f" | {sum(chance) / len(chance):.3f} | |")
    for step, held, seen in rows:
        lines.append(f"| {step} | " + " | ".join(f"{a:.2f}" for a in held) + f" | {sum(held) / len(held):.3f} | "
                     f"{seen:.3f} |")
    body = (f"`{args.variant}` backend of the embedded default ({args.synthetic_clips} synthetic clips: "
            f"{len(train_y)} training, {len(test_y)} held-out), trained from the cached features with a linear "
            f"read-out of its {width}-wide flattened head queries per event slot and attribute (cross-entropy), "
            f"batch {tcfg.micro_batch_size}, AdamW at peak lr {args.lr:g} with warm-up + cosine over {args.steps} "
            f"steps, seed {args.seed}; accuracy on the held-out clips that have the slot, and the mean on "
            f"{len(seen_y)} training clips; {time.time() - start:.0f} s of training and evaluation.\n\n"
            + "\n".join(lines))
    print(body)
    if not args.no_write:
        name = f"backend_probe-{args.variant}-{args.synthetic_clips}"
        print("wrote", write_result(name, f"Backend probe: {args.variant}, {args.synthetic_clips} clips", body))
    return body


if __name__ == "__main__":
    main()
