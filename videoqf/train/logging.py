"""Run logging on rank 0: tqdm bar, TensorBoard scalars, ``metrics.jsonl``; the query-collapse metric.

Query collapse: when a Q-Former's learned queries all end up asking the same thing, their outputs
become parallel. We report the mean pairwise cosine similarity of the query outputs of a sample
(off-diagonal pairs only), averaged over the batch, and warn above ``COLLAPSE_WARN`` (0.9).
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from videoqf.io import write_atomic

COLLAPSE_WARN = 0.9
METRICS_FILE = "metrics.jsonl"


def query_collapse(query_output: torch.Tensor) -> float:
    """Mean off-diagonal cosine similarity between queries. query_output: [B, Q, H] with Q >= 2."""
    if query_output.ndim != 3 or query_output.shape[1] < 2:
        raise ValueError(f"query_output must be [B, Q>=2, H], got {tuple(query_output.shape)}")
    q = F.normalize(query_output.detach().float(), dim=-1)
    sim = q @ q.transpose(1, 2)  # [B, Q, Q]
    n = q.shape[1]
    off_diagonal = (sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(dim=1)) / (n * (n - 1))
    return off_diagonal.mean().item()


def truncate_metrics(output_dir: str | Path, last_step: int) -> None:
    """Drop lines past ``last_step`` from ``metrics.jsonl`` (a resumed run writes those steps again)."""
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    write_atomic(path, "".join(line + "\n" for line in keep).encode())


class RunLogger:
    """Logs on rank 0 only; every method is a no-op on the other ranks.

    ``log(step, metrics, kind)`` writes one JSON object ``{"step", "kind", "time", **metrics}`` (time: Unix seconds) to
    ``metrics.jsonl`` and each number as a TensorBoard scalar ``<kind>/<name>``; ``advance`` moves the bar.
    """

    def __init__(self, output_dir: str | Path, *, rank: int, total_steps: int, initial_step: int,
                 progress_bar: bool = True) -> None:
        self.active = rank == 0
        if not self.active:
            return
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.dir / METRICS_FILE, "a")
        self.writer = SummaryWriter(str(self.dir / "tensorboard"), purge_step=initial_step + 1)
        self.bar = tqdm(total=total_steps, initial=initial_step, desc="train", dynamic_ncols=True,
                        disable=not progress_bar)

    def log(self, step: int, metrics: dict[str, Any], kind: str = "train") -> None:
        if not self.active:
            return
        # the wall-clock time lets a reader split a run's time by stage (benchmarks/default_run.py)
        self.jsonl.write(json.dumps({"step": step, "kind": kind, "time": round(time.time(), 3), **metrics}) + "\n")
        self.jsonl.flush()
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{kind}/{name}", value, step)
        collapse = metrics.get("query_collapse")
        if collapse is not None and collapse > COLLAPSE_WARN:
            warnings.warn(f"step {step}: query collapse {collapse:.3f} > {COLLAPSE_WARN}: the query outputs "
                          "are nearly parallel (queries ask the same thing)", RuntimeWarning, stacklevel=2)

    def advance(self, postfix: dict[str, float], skipped: dict[str, int] | None = None) -> None:
        """Move the bar one step; ``skipped``: clips the data skipped so far, by reason (shown when any)."""
        if self.active:
            self.bar.update(1)
            shown = {k: f"{v:.4g}" for k, v in postfix.items()}
            if skipped:
                shown["skipped"] = " ".join(f"{reason}:{n}" for reason, n in skipped.items())
            self.bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        if self.active:
            self.bar.close()
            self.writer.close()
            self.jsonl.close()
