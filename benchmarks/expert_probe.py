"""What each expert's queries carry in a trained spatio-temporal model: linear probes per query group.

The spatio-temporal head's query groups (spatial / temporal / semantic, each with its FFN expert; see
videoqf/backends/spatiotemporal.py) are read out of a trained run on the embedded synthetic world, on cached
features, and probed with closed-form ridge probes fitted on training clips and scored on held-out ones:

- what, order-free: whether each colour and each shape occurs in the clip (mean over the binary probes);
- what and when: colour, shape and action (with the direction of "moves") of event 1, 2 and 3 in time order,
  which needs order as soon as a clip has two events (mean over slots);
- order: the first event's colour on the clips whose events have two or more colours, against the best an
  order-blind reading can do there (knowing the colours but not their order: 1 / their number);
- order sensitivity: how far a group's output moves when the clip's frames are reversed, relative to how far it
  is from another clip's (0: the group reads no order at all).
A last row probes the frozen encoder's tokens (as the backend reads them) averaged over the frames, which hold no
order by construction: what it gets right on the order column, the world gives away without order.

    python benchmarks/expert_probe.py --checkpoint runs/spatiotemporal-20261205-0130
    python benchmarks/expert_probe.py --checkpoint runs/sweep/spatiotemporal/seed{0,1,2}/stage1   # over seeds
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_result  # noqa: E402
from videoqf.sweep.report import Spread  # noqa: E402
from videoqf.data.synthetic.vocab import COLOURS, SHAPES  # noqa: E402
from videoqf.eval.probes import ATTRIBUTES, SLOTS, event_labels, ridge_accuracy  # noqa: E402
from videoqf.recipes.checkpoint_model import load_model  # noqa: E402
from videoqf.recipes.run import datasets, make_collate  # noqa: E402


ORDER_BLIND = "frames averaged (order-blind reference)"


def presence_labels(record: dict) -> list[int]:
    """1 where a colour / shape occurs among the clip's events, per colour then per shape."""
    events = record["spec"]["events"]
    return ([int(any(e["colour"] == c for e in events)) for c in COLOURS]
            + [int(any(e["shape"] == s for e in events)) for s in SHAPES])


def first_colour(record: dict) -> tuple[int, float]:
    """(the first event's colour where the events have 2+ colours, else -1; 1 / their number of colours)."""
    colours = [e["colour"] for e in record["spec"]["events"]]
    distinct = len(set(colours))
    return (list(COLOURS).index(colours[0]) if distinct > 1 else -1), 1 / max(distinct, 1)


def reversed_frames(batch: dict) -> dict:
    return {**batch, "frame_features": batch["frame_features"].flip(1), "frame_mask": batch["frame_mask"].flip(1)}


@torch.no_grad()
def group_outputs(model, dataset, collate, groups: dict[str, slice], limit: int, batch_size: int = 64):
    """Per group: the flattened query outputs [clips, G * H] of the clips and of their frames reversed, and the
    labels of the clips (presence, event slots)."""
    count = min(limit, len(dataset)) if limit else len(dataset)
    subset = torch.utils.data.Subset(dataset, range(count))
    outs = {name: ([], []) for name in [*groups, ORDER_BLIND]}
    for batch in tqdm(DataLoader(subset, batch_size=batch_size, collate_fn=collate), desc="encoding", leave=False):
        for j, view in enumerate((batch, reversed_frames(batch))):
            tokens = model.encode(view, audio=False).contrastive_tokens
            for name, rows in groups.items():
                outs[name][j].append(tokens[:, rows].flatten(1).double())
            mask = view["frame_mask"][:, :, None, None]
            frames = (model.frame_features(view) * mask).sum(1) / mask.sum(1)
            outs[ORDER_BLIND][j].append(frames.flatten(1).double())
    records = [dataset.record(i).meta for i in range(count)]
    presence = torch.tensor([presence_labels(r) for r in records])
    slots = torch.tensor([event_labels(r) for r in records])
    first, blind = zip(*(first_colour(r) for r in records))
    labels = dict(presence=presence, slots=slots, first=torch.tensor(first), blind=torch.tensor(blind))
    return {n: (torch.cat(a), torch.cat(b)) for n, (a, b) in outs.items()}, labels


def order_sensitivity(x: torch.Tensor, x_reversed: torch.Tensor) -> float:
    """Mean distance to the reversed clip over the mean distance to another clip (0: order-blind)."""
    return ((x - x_reversed).norm(dim=1).mean() / (x - x.roll(1, dims=0)).norm(dim=1).mean()).item()


COLUMNS = ["colour & shape present", "event 1-3: colour", "event 1-3: shape", "event 1-3: action (direction)",
           "first event's colour (2+ colours)", "order sensitivity"]


def probe_run(checkpoint: str, train_clips: int, ridge: float) -> dict:
    """One trained run's probe figures: per query group the COLUMNS, with the run's description and baselines."""
    model, cfg, folder = load_model(checkpoint)
    if cfg.model.variant != "spatiotemporal":
        raise SystemExit(f"{checkpoint} is a {cfg.model.variant!r} model; the expert probe reads spatiotemporal groups")
    backend = model.backend.config
    groups, start = {}, 0
    names = ["spatial", "temporal", "semantic"] if backend.experts else ["queries (one FFN)"]
    for name, size in zip(names, backend.group_sizes if backend.experts else [backend.qformer.num_queries]):
        groups[name], start = slice(start, start + size), start + size
    groups["all queries"] = slice(0, start)
    train, held_out = datasets(cfg, model)
    collate = make_collate(cfg, model.tokenizer)
    fit, fit_y = group_outputs(model, train, collate, groups, train_clips)
    test, test_y = group_outputs(model, held_out, collate, groups, 0)

    def mean_accuracy(train_x, train_y, test_x, test_y):  # over the labels some clip has (NaN ones left out)
        return Spread.of([ridge_accuracy(train_x, train_y[:, j], test_x, test_y[:, j], ridge)
                          for j in range(train_y.shape[1])]).mean

    majority = test_y["presence"].double().mean(0)
    ordered = test_y["first"] >= 0
    figures = {}
    for name in [*groups, ORDER_BLIND]:
        (x, x_rev), (t, t_rev) = fit[name], test[name]
        cells = [mean_accuracy(x, fit_y["presence"], t, test_y["presence"])]
        for a in range(len(ATTRIBUTES)):  # the slot labels are [colour, shape, action] per slot in turn
            cols = [k * len(ATTRIBUTES) + a for k in range(SLOTS)]
            cells.append(mean_accuracy(x, fit_y["slots"][:, cols], t, test_y["slots"][:, cols]))
        cells.append(ridge_accuracy(x, fit_y["first"], t, test_y["first"], ridge))
        figures[name] = cells + [order_sensitivity(t, t_rev)]
    return dict(
        folder=folder, figures=figures, sizes={n: g.stop - g.start for n, g in groups.items()},
        timed=list(backend.timed_experts) if backend.experts else None, temporal_pe=backend.temporal_pe,
        persistent=bool(train.record(0).meta["spec"].get("persistent")),
        chance_presence=torch.maximum(majority, 1 - majority).mean().item(),
        blind=test_y["blind"][ordered].mean().item(), fit_clips=len(fit_y["presence"]),
        test_clips=len(test_y["presence"]), ordered_clips=int(ordered.sum()))


def spread(values: list[float]) -> str:
    """One figure, or the mean and range over the runs."""
    return f"{values[0]:.3f}" if len(values) == 1 else Spread.of(values).text()


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, nargs="+",
                    help="trained spatiotemporal runs, stage or checkpoint folders; several (seeds of one config) "
                         "give the mean and range over them")
    ap.add_argument("--train-clips", type=int, default=2000, help="training clips the probes are fitted on")
    ap.add_argument("--ridge", type=float, default=0.1, help="ridge, relative to the mean kernel diagonal")
    ap.add_argument("--no-write", action="store_true", help="print the table without writing results/")
    args = ap.parse_args(argv)
    runs = [probe_run(c, args.train_clips, args.ridge) for c in args.checkpoint]
    first = runs[0]
    keys = ("timed", "temporal_pe", "persistent", "test_clips")
    for run in runs[1:]:
        if any(run[k] != first[k] for k in keys):
            ap.error(f"{run['folder']} differs from {first['folder']} in "
                     + ", ".join(k for k in keys if run[k] != first[k]) + ": probe one config's runs together")
    lines = ["| query group | queries | " + " | ".join(COLUMNS) + " |", "|---|---:|" + "---:|" * len(COLUMNS),
             f"| majority class / order-blind best | | {spread([r['chance_presence'] for r in runs])} | | | | "
             f"{spread([r['blind'] for r in runs])} | 0 |"]
    for name in first["figures"]:
        per_column = zip(*(r["figures"][name] for r in runs))
        lines.append(f"| {name} | {first['sizes'].get(name, '')} | " + " | ".join(spread(list(v)) for v in per_column)
                     + " |")
    folders = ", ".join(f"`{r['folder']}`" for r in runs)
    over = f"; mean (min..max) over the {len(runs)} runs" if len(runs) > 1 else ""
    experts = first["timed"] is not None
    timed = ", ".join(first["timed"]) if experts else "all"
    world = "persistent-objects world" if first["persistent"] else "own-event world"
    body = (f"Runs {folders} ({'FFN experts' if experts else 'experts off: BLIP-2 routing'}; queries "
            f"reading time: {timed}; temporal PE {'on' if first['temporal_pe'] else 'off'}{over}): each "
            f"query group's flattened outputs on cached features; ridge probes (ridge {args.ridge} x the mean kernel "
            f"diagonal) fitted on {first['fit_clips']} training clips, accuracy on {first['test_clips']} held-out "
            f"clips ({first['ordered_clips']} with 2+ colours). Order sensitivity: mean distance to the same clip "
            "with its frames reversed over the mean distance to another clip, on the held-out clips.\n\n"
            + "\n".join(lines))
    print(body)
    if not args.no_write:
        name = "expert_probe-" + ("-".join(first["timed"]) if experts else "no-experts")
        title = f"Expert probe: spatiotemporal, time read by {timed}, {world}"
        print("wrote", write_result(name + ("-persistent" if first["persistent"] else ""), title, body))
    return body


if __name__ == "__main__":
    main()
