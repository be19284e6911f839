"""Measuring code side by side: interleaved timing and the activation memory a training step keeps.

The benchmarks (``benchmarks/``) and the sweep (``videoqf.sweep``) measure with these, so their ratios are
taken the same way.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def interleaved_medians(fns: dict[str, Callable[[], None]], *, repeats: int, warmup: int = 1,
                        sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median seconds per call of each function, measured round-robin so drift hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for backward during ``fn()`` (training-step activation memory)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total
