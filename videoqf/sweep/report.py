"""The sweep's table, findings and plot, all made from the saved cells (``videoqf.sweep.cells``).

Quality figures are the mean over seeds with the seed range (min..max); a difference between two variants
counts as real only when their seed ranges do not overlap (every seed of one beats every seed of the
other), and the text under the table says so in each comparison rather than stating expected effects.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from videoqf.sweep.cells import BARE_SUFFIX, KIT_SUFFIX, SweepResult

# (metric key, column title) of the quality columns, in table order; the last one is training health: the
# mean pairwise cosine similarity of the head's query outputs at the end of stage 1 (lower: less collapse).
QUALITY = (("t2v_r1", "t2v R@1"), ("stage1_t2v_r1", "t2v R@1 after stage 1"), ("order_pair_acc", "order pair acc"),
           ("caption_order_acc", "caption order acc"), ("lm_sound_pair_acc", "sound pair acc (LLM)"),
           ("caption_sound_acc", "caption sound acc"), ("cider", "CIDEr"), ("query_collapse", "query collapse"))
LOWER_IS_BETTER = {"query_collapse"}

# (what is compared, variant expected better, variant expected worse, metrics it should show on)
EXPECTED = (
    ("temporal PE on vs off", "cascaded", "cascaded-nope", ("order_pair_acc", "caption_order_acc")),
    ("audio on vs off", "cascaded", "cascaded-noaudio", ("lm_sound_pair_acc", "caption_sound_acc")),
    ("FFN experts on vs off", "spatiotemporal", "spatiotemporal-noexperts",
     ("t2v_r1", "cider", "order_pair_acc", "caption_order_acc")),
    ("every expert reads time vs only T-FFN's and SM-FFN's queries", "spatiotemporal", "spatiotemporal-roles",
     ("order_pair_acc", "caption_order_acc", "t2v_r1")),
    ("temporal PE on vs off (spatiotemporal)", "spatiotemporal", "spatiotemporal-nope",
     ("order_pair_acc", "caption_order_acc")),
    ("attentive pooling on vs off", "spatiotemporal", "spatiotemporal-nopool",
     ("t2v_r1", "order_pair_acc", "caption_order_acc")),
    ("4 vs 8 frame queries", "cascaded", "cascaded-8q", ("order_pair_acc", "caption_order_acc", "t2v_r1")),
    ("Video-LLaMA from the BLIP-2 run vs from scratch", "video-llama-init", "video-llama",
     ("t2v_r1", "caption_order_acc", "cider")),
    ("Video Q-Former from the BLIP-2 run vs from scratch", "video-qformer-init", "video-qformer",
     ("t2v_r1", "caption_order_acc", "cider")),
)

# Variants with no temporal position anywhere: a clip and its reordered partner differ to them only by float
# rounding, so their pair accuracies must sit at or below random scores' (eval.synthetic), else the world leaks order.
ORDER_BLIND = ("meanpool", "cascaded-nope")
PAIR_CHANCE = 0.25


@dataclass(frozen=True)
class Spread:
    """A metric over seeds: mean, min, max and the number of seeds that reported it."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(statistics.fmean(values), min(values), max(values), len(values))

    @property
    def range(self) -> float:
        return self.high - self.low

    def text(self, digits: int = 3) -> str:
        if not self.n:
            return "n/a"
        return f"{self.mean:.{digits}f} ({self.low:.{digits}f}..{self.high:.{digits}f})"


def quality(result: SweepResult, variant: str, key: str) -> Spread:
    return Spread.of([cell["metrics"].get(key) for cell in result.cells[variant]])


def compare(result: SweepResult, better: str, worse: str, key: str) -> str:
    """One sentence: does ``better`` beat ``worse`` on ``key`` beyond the seed spread? (For a key in
    ``LOWER_IS_BETTER``, beating means being lower.)"""
    a, b = quality(result, better, key), quality(result, worse, key)
    if not (a.n and b.n):
        return f"{key}: not measured (no value for {better if not a.n else worse})"
    diff = a.mean - b.mean
    spread = f"seed ranges {a.low:.3f}..{a.high:.3f} vs {b.low:.3f}..{b.high:.3f}"
    if min(a.n, b.n) < 2:
        return f"{key}: {better} - {worse} = {diff:+.3f} from a single seed, so no spread to judge it by"
    lower = key in LOWER_IS_BETTER
    a_wins, b_wins = (a.high < b.low, b.high < a.low) if lower else (a.low > b.high, b.low > a.high)
    if a_wins:
        return f"{key}: {better} beats {worse} by {diff:+.3f} on every seed ({spread})"
    if b_wins:
        return f"{key}: {worse} beats {better} by {-diff:+.3f} on every seed, against the expectation ({spread})"
    return f"{key}: no difference beyond seed spread ({better} - {worse} = {diff:+.3f}; {spread})"


def findings(result: SweepResult) -> list[str]:
    """The expected effects checked against the numbers, one bullet each, plus the seed spread."""
    present = set(result.cells)
    lines = []
    for what, better, worse, keys in EXPECTED:
        if {better, worse} <= present:
            lines.append(f"- **{what}** ({better} vs {worse}): " + "; ".join(compare(result, better, worse, k)
                                                                          for k in keys) + ".")
    blind = [v for v in ORDER_BLIND if v in present]
    if blind:
        lines.append(shortcut_check(result, blind))
    for kit in sorted(v for v in present if v.endswith(KIT_SUFFIX)):
        base = kit[: -len(KIT_SUFFIX)]
        if base in present:
            lines.append(f"- **stability kit on vs off** ({kit} vs {base}): " + "; ".join(
                compare(result, kit, base, k)
                for k in ("query_collapse", "t2v_r1", "caption_order_acc", "cider")) + ".")
    for bare in sorted(v for v in present if v.endswith(BARE_SUFFIX)):
        base = bare[: -len(BARE_SUFFIX)]
        if base in present:
            lines.append(f"- **gradient clipping and warm-up on vs off** ({base} vs {bare}): " + "; ".join(
                compare(result, base, bare, k) for k in ("query_collapse", "t2v_r1", "caption_order_acc")) + ".")
    if {"framewise", "cascaded"} <= present:
        fw, cas = result.costs["framewise"]["llm_tokens"], result.costs["cascaded"]["llm_tokens"]
        lines.append(f"- **framewise vs cascaded tokens**: framewise hands the LLM {fw} tokens per clip, cascaded "
                     f"{cas} ({fw / cas:.1f}x); quality: " + "; ".join(
                         compare(result, "framewise", "cascaded", k) for k in ("t2v_r1", "cider")) + ".")
    forgot = [v for v, cells in result.cells.items()
              if cells and all(c["metrics"].get("stage1_t2v_r1") is not None
                               and c["metrics"]["t2v_r1"] < c["metrics"]["stage1_t2v_r1"] for c in cells)]
    if any(c["metrics"].get("stage1_t2v_r1") is not None for cells in result.cells.values() for c in cells):
        lines.append("- **forgetting** (t2v R@1 lower after stage 2 than after stage 1 on every seed): "
                     + (", ".join(forgot) if forgot else "none") + ".")
    clips = min((c["held_out_clips"] for cells in result.cells.values() for c in cells), default=0)
    if clips:
        chance = 1 / clips
        near = [v for v in result.cells if quality(result, v, "t2v_r1").high < 2 * chance]
        lines.append(f"- **chance**: t2v R@1 by chance is 1/{clips} = {chance:.3f}; "
                     + (f"{', '.join(near)} stay below twice that on every seed, so their other quality figures "
                        "say little about the variant at this budget." if near else
                        "every variant measured beats twice that on some seed."))
    ranges = {key: max((quality(result, v, key).range for v in result.cells if quality(result, v, key).n > 1),
                       default=math.nan) for key, _ in QUALITY}
    seeds = sorted({c["seed"] for cells in result.cells.values() for c in cells})
    lines.append(f"- **seed spread** (largest max-min over the {len(seeds)} seeds {seeds} of any variant): "
                 + ", ".join(f"{key} {r:.3f}" for key, r in ranges.items() if math.isfinite(r))
                 + "; gaps between variants smaller than these are noise at this budget.")
    return lines


def shortcut_check(result: SweepResult, variants: list[str]) -> str:
    """The order-blind variants' pair accuracies against random scores': a verdict on whether the world leaks order."""
    figures, leaks = [], []
    for variant in variants:
        for key in ("order_pair_acc", "lm_order_pair_acc"):
            q = quality(result, variant, key)
            if q.n:
                figures.append(f"{variant} {key} {q.text()}")
                if q.low > PAIR_CHANCE:
                    leaks.append(f"{variant} {key}")
    verdict = (f"above {PAIR_CHANCE} on every seed: {', '.join(leaks)}, so the world leaks order and no order figure "
               "counts until it is fixed" if leaks else
               f"none is above random scores' {PAIR_CHANCE} on every seed: no order leak found")
    return f"- **shortcut check** (no temporal position; chance {PAIR_CHANCE}): {'; '.join(figures)}; {verdict}."


def table(result: SweepResult) -> str:
    head = ["variant", "trainable (M)", "total (M)", "LLM tokens", "backend MFLOP/clip", "stage-1 MFLOP/clip",
            "s/step", "clips/s", "saved for backward (MiB)"]
    gpu = any(c.get("cuda_peak_bytes") for c in result.costs.values())
    head += ["peak GPU (MiB)"] * gpu + [title for _, title in QUALITY]
    rows = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for name in result.cells:
        c = result.costs[name]
        cells = [name, f"{c['params_trainable'] / 1e6:.2f}", f"{c['params_total'] / 1e6:.2f}", str(c["llm_tokens"]),
                 f"{c['backend_flops_per_clip'] / 1e6:,.1f}", f"{c['stage1_flops_per_clip'] / 1e6:,.1f}",
                 f"{c['step_s']:.3f}", f"{c['clips_per_s']:.1f}", f"{c['saved_bytes'] / 2**20:.1f}"]
        if gpu:
            cells.append(f"{(c.get('cuda_peak_bytes') or 0) / 2**20:.0f}")
        cells += [quality(result, name, key).text() for key, _ in QUALITY]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(result: SweepResult, path: Path) -> Path:
    """Quality (t2v R@1, caption order acc) against backend FLOPs per clip, seed range as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (key, title) in zip(axes, [q for q in QUALITY if q[0] in ("t2v_r1", "caption_order_acc")]):
        for name in result.cells:
            q = quality(result, name, key)
            if not q.n:
                continue
            x = result.costs[name]["backend_flops_per_clip"] / 1e6
            ax.errorbar([x], [q.mean], yerr=[[q.mean - q.low], [q.high - q.mean]], fmt="o", capsize=4, label=name)
            ax.annotate(name, (x, q.mean), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("backend MFLOP per clip (log)")
        ax.set_ylabel(title)
        ax.set_title(f"{title}: mean and seed range")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _on_threads(result: SweepResult) -> str:
    """Which torch thread count the step times were taken on (the machine line names the process default)."""
    threads = sorted({c["threads"] for c in result.costs.values() if "threads" in c})
    return f" on {'/'.join(map(str, threads))} torch thread{'s' * (threads != [1])}" if threads else ""


def report_body(result: SweepResult, *, budget: str, name: str = "sweep") -> str:
    """The report's markdown: budget, costs, the table and the findings, with the plot ``<name>.png`` linked."""
    seeds = sorted({c["seed"] for cells in result.cells.values() for c in cells})
    some = next(iter(result.costs.values()))
    train_min = sum(c.get("wall_s", 0.0) for cells in result.cells.values() for c in cells) / 60
    body = (
        f"Budget `{budget}`; seeds {seeds} (train.seed; the frozen encoders are the same for all); "
        f"{some['num_frames']} frames per clip; quality on the synthetic held-out clips as mean (min..max over "
        f"seeds); training + evaluation took {train_min:.1f} min in all (cells run by earlier invocations "
        f"included).\n\n"
        f"Costs from cached encoder features (the frozen encoders are not counted), on {some['device']}: "
        f"parameters trained in either stage vs all (frozen encoders and LLM included); FLOPs per clip of the "
        f"backend forward and of the whole stage-1 forward (VTC + VTM + VTG) over a batch of {some['batch']}; "
        f"a stage-1 train step (forward, backward, AdamW) timed as the median of {some['recipe']['repeats']} "
        f"steps interleaved across variants{_on_threads(result)}; the bytes autograd saves for backward in that "
        f"forward.\n\n"
        f"{table(result)}\n\n"
        "What the numbers say (a difference counts only when the seed ranges do not overlap):\n\n"
        + "\n".join(findings(result)) + "\n\n"
        f"![quality vs FLOPs]({name}.png)\n"
    )
    return body
