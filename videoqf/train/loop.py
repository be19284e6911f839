"""The training loop: micro-batches -> DeepSpeed forward/backward/step, with logging, eval, checkpoints.

Model contract: ``model(batch) -> dict`` with ``loss`` (scalar tensor, a mean over the batch so that
ranks x micro batch = one bigger micro batch), optional ``logs`` (``{name: scalar tensor}``) and
optional ``query_output`` (``[B, Q, H]``, for the query-collapse metric). The parameters with
``requires_grad`` are trained (the caller decides which: ``videoqf.models.groups.lock``); frozen ones get no
optimizer state and are not checkpointed.
A step whose loss is NaN/Inf on any rank (agreed by an all-reduce before any backward) is skipped:
no backward, no optimizer update, its gradients so far discarded, its remaining micro-batches drawn
but not run (so later steps see the same data as a run without the skip); the lr schedule moves on.
A step whose loss is finite but whose gradients are not is skipped too (no update, the lr schedule moves
on): the plain optimizer's gradient norm is checked before the update, DeepSpeed's ZeRO optimizers skip
such a step themselves and say so (``was_step_applied``). ``max_nan_steps`` skipped steps in a row raise
:class:`TrainingDiverged` naming the last checkpoint, and no checkpoint is written from non-finite weights.
A batch may carry ``skipped``: ``{clip id: reason}`` of the samples the data passed over to fill it; the
trainer takes it out of the batch and reports the distinct clips by reason (metrics.jsonl, progress bar,
``skipped_counts()``), kept across a resume.
Resume compares the checkpoint's ``train_config.yaml`` with this run's config and refuses a change that
breaks exact continuation (any key but ``RESUMABLE_CHANGES``) unless ``allow_config_change``.
"""
from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from videoqf.config import load_config, to_yaml
from videoqf.train.checkpoint import (ExtraFile, config_changes, isolated_rng, load_checkpoint, resolve_checkpoint,
                                      save_checkpoint)
from videoqf.train.config import TrainConfig
from videoqf.train.data import MicroBatchStream
from videoqf.train.engine import build_engine, init_distributed
from videoqf.train.logging import RunLogger, query_collapse, truncate_metrics

EvalFn = Callable[[nn.Module, int], Mapping[str, float]]


# Keys that change logging, saving or speed only: a resumed run may change them and still continue exactly.
RESUMABLE_CHANGES = frozenset({"log_every", "eval_every", "save_every", "keep_last", "max_nan_steps",
                               "num_workers", "progress_bar", "num_threads"})


class TrainingDiverged(RuntimeError):
    """Too many steps in a row with a non-finite loss or gradient (or weights gone non-finite)."""


def to_device(batch: Any, device: torch.device, dtype: torch.dtype | None) -> Any:
    """Move tensors to ``device``; floating ones to the engine's compute ``dtype`` (bf16/fp16 runs; None keeps
    theirs)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, dtype=dtype if batch.is_floating_point() else None, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, dtype) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device, dtype) for v in batch)
    return batch


def on_every_rank(ok: bool, device: torch.device) -> bool:
    """Whether ``ok`` holds on every rank (a collective). The flag is made on ``device``, the engine's: NCCL, the
    GPU backend, reduces no CPU tensor, even in a one-process group."""
    flag = torch.tensor([float(ok)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


class Trainer:
    """Train ``model`` on ``train_dataset`` (map-style; ``collate_fn`` makes micro-batches) under DeepSpeed,
    into ``output_dir`` (``metrics.jsonl``, ``tensorboard/``, ``checkpoints/``).

    eval_fn: ``eval_fn(model, step) -> {name: number}``, called on every rank every ``eval_every`` steps
        and at the end, with the bare module in eval mode under ``torch.no_grad()``; the training RNG is
        saved and restored around it, so evaluating does not change training.
    extra_files: ``{name: source}`` put in every checkpoint directory beside the weights: a file or
        directory path (copied) or a function ``write(dest_path)``. ``train_config.yaml`` is always added.
    num_trainable: the number of trained parameter elements, also written
        to ``metrics.jsonl`` as ``{"kind": "setup", "trainable_params": ...}`` when ``fit`` starts.
    """

    def __init__(self, model: nn.Module, train_dataset: Dataset, collate_fn: Callable | None,
                 config: TrainConfig, *, output_dir: str | Path, eval_fn: EvalFn | None = None,
                 extra_files: Mapping[str, ExtraFile] | None = None) -> None:
        init_distributed()
        self.config, self.eval_fn = config, eval_fn
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.extra_files = {"train_config.yaml": lambda p: p.write_text(to_yaml(config)), **(extra_files or {})}
        trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not trained:
            raise ValueError("the model has no trainable parameter (all have requires_grad=False)")
        self.trainable = [n for n, _ in trained]
        self.trained_params = [p for _, p in trained]  # not the frozen LLM's, each step
        self.num_trainable = sum(p.numel() for p in self.trained_params)
        self.stream = MicroBatchStream(train_dataset, collate_fn, micro_batch_size=config.micro_batch_size,
                                       seed=config.seed, rank=self.rank, world_size=self.world_size,
                                       num_workers=config.num_workers)
        if config.max_steps is not None:
            self.total_steps = config.max_steps
        else:
            self.total_steps = config.epochs * self.stream.batches_per_epoch // config.grad_accum
            if self.total_steps < 1:
                raise ValueError(f"{config.epochs} epoch(s) of {self.stream.batches_per_epoch} micro-batches "
                                 f"make no step of {config.grad_accum} micro-batches; set train.max_steps")
        self.engine = build_engine(model, config, self.total_steps)
        self.dtype = (torch.bfloat16 if self.engine.bfloat16_enabled() else
                      torch.float16 if self.engine.fp16_enabled() else torch.float32)
        self.output_dir = Path(output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.step = 0
        self.nan_streak = 0
        self.last_checkpoint: Path | None = None
        self.skipped: dict[str, str] = {}  # clip id -> reason, of the samples the data skipped

    # ----------------------------------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        return {"step": self.step, **self.stream.state(), "world_size": self.world_size,
                "nan_streak": self.nan_streak, "total_steps": self.total_steps, "trainable": self.trainable,
                "skipped": self._all_skipped()}

    def _all_skipped(self) -> dict[str, str]:
        """The skipped clips of every rank (a collective: every rank calls it at the same point), kept."""
        if self.world_size > 1:
            parts: list = [None] * self.world_size
            dist.all_gather_object(parts, self.skipped)
            self.skipped = {k: v for part in parts for k, v in part.items()}
        return dict(self.skipped)

    def skipped_counts(self) -> dict[str, int]:
        """Distinct clips the data skipped, by reason: every rank's as of the last log or save, and this
        rank's since (all of them once ``fit`` returns)."""
        return dict(sorted(Counter(self.skipped.values()).items()))

    def _check_config(self, tag_dir: Path, allow_change: bool) -> None:
        saved = asdict(load_config(TrainConfig, tag_dir / "train_config.yaml"))
        changes = config_changes(saved, asdict(self.config))
        breaking = [c for c in changes if c.split(":")[0] not in RESUMABLE_CHANGES]
        if breaking and not allow_change:
            raise ValueError(f"checkpoint {tag_dir}: the train config changed since it was saved ("
                             f"{'; '.join(breaking)}); resuming would not continue the run exactly. Restore "
                             "these values, or allow it explicitly (allow_config_change / --allow-config-change)")
        if changes and self.rank == 0:
            print(f"resuming {tag_dir} with a changed train config: {'; '.join(changes)}", flush=True)

    def _resume(self, path: str | Path, allow_config_change: bool = False) -> None:
        tag_dir = resolve_checkpoint(path)
        self._check_config(tag_dir, allow_config_change)
        state = load_checkpoint(self.engine, tag_dir)
        self.step, self.nan_streak = state["step"], state["nan_streak"]
        self.stream.epoch, self.stream.position = state["epoch"], state["position"]
        self.skipped = dict(state.get("skipped", {}))
        self.last_checkpoint = tag_dir
        if self.rank == 0:
            truncate_metrics(self.output_dir, self.step)

    def _save(self) -> None:
        finite = all(torch.isfinite(p).all() for p in self.engine.module.parameters() if p.requires_grad)
        if not on_every_rank(finite, self.engine.device):
            raise TrainingDiverged(f"step {self.step}: the trained weights hold NaN/Inf; not saving them. "
                                   f"Last good checkpoint: {self.last_checkpoint or 'none saved yet'}")
        self.last_checkpoint = save_checkpoint(self.engine, self.checkpoint_dir, self.step, self._state(),
                                               keep_last=self.config.keep_last, extra_files=self.extra_files)

    def _evaluate(self, log: RunLogger) -> dict[str, float]:
        model = self.engine.module
        was_training = model.training
        model.eval()
        try:
            with isolated_rng(), torch.no_grad():
                metrics = {k: float(v) for k, v in self.eval_fn(model, self.step).items()}
        finally:
            model.train(was_training)
        log.log(self.step, metrics, kind="eval")
        return metrics

    # ------------------------------------------------------------------------------------------ step
    def _next_batch(self) -> Any:
        batch = self.stream.next()
        if isinstance(batch, dict) and isinstance(batch.get("skipped"), Mapping):
            self.skipped.update(batch.pop("skipped"))
        return batch

    def _skip_step(self) -> None:
        """Drop this step's gradients (partial accumulations must not leak into the next step); the lr
        schedule moves on."""
        self.engine.optimizer.zero_grad()
        self.engine.zero_grad()
        self.engine.lr_scheduler.step()

    def _run_step(self) -> tuple[torch.Tensor | str, dict[str, torch.Tensor], torch.Tensor | None, float | None]:
        """One optimizer step over ``grad_accum`` micro-batches; returns (loss, logs, query_output, grad_norm).

        loss is the reason ("non-finite loss" / "non-finite gradient") when the step was skipped on some
        rank. loss and logs are means over micro-batches and ranks.
        """
        engine, gas = self.engine, self.config.grad_accum
        loss_sum, logs_sum, query = torch.zeros((), device=engine.device), {}, None
        skipped = False
        for micro in range(gas):
            batch = self._next_batch()
            if skipped:
                continue
            engine.set_gradient_accumulation_boundary(micro == gas - 1)
            out = engine(to_device(batch, engine.device, self.dtype))
            loss = out["loss"]
            if not on_every_rank(bool(torch.isfinite(loss.detach()).all()), engine.device):
                skipped = True
                continue
            engine.backward(loss)
            loss_sum += loss.detach().float()
            for name, value in out.get("logs", {}).items():
                logs_sum[name] = logs_sum.get(name, 0.0) + value.detach().float()
            query = out.get("query_output")
        if skipped:
            self._skip_step()
            return "non-finite loss", {}, None, None
        # DeepSpeed's plain-optimizer path keeps no gradient norm: it is computed here from the all-reduced gradients
        with_grad = None if hasattr(engine.optimizer, "_global_grad_norm") else [
            p for p in self.trained_params if p.grad is not None]
        grad_norm = None if with_grad is None else float(torch.nn.utils.get_total_norm([p.grad for p in with_grad]))
        if grad_norm is not None:
            if not on_every_rank(math.isfinite(grad_norm), engine.device):
                self._skip_step()
                return "non-finite gradient", {}, None, None
            if self.config.grad_clip > 0 and engine.gradient_clipping() == 0:  # build_ds_config left it to us
                torch.nn.utils.clip_grads_with_norm_(with_grad, self.config.grad_clip, torch.tensor(grad_norm))
        engine.step()
        if not engine.was_step_applied():  # ZeRO found a non-finite gradient norm and skipped the update
            engine.lr_scheduler.step()
            return "non-finite gradient", {}, None, None
        if grad_norm is None and engine.get_global_grad_norm() is not None:
            grad_norm = float(engine.get_global_grad_norm())
        names = sorted(logs_sum)
        means = torch.stack([loss_sum, *(logs_sum[n] for n in names)]) / (gas * self.world_size)
        dist.all_reduce(means)
        return means[0], dict(zip(names, means[1:])), query, grad_norm

    # ------------------------------------------------------------------------------------------- fit
    def fit(self, resume: str | Path | None = None, *, allow_config_change: bool = False) -> dict[str, float]:
        """Train to ``total_steps``; ``resume``: a checkpoint (tag dir, checkpoints root or run dir) to continue.

        allow_config_change: resume even though the train config changed in a way that breaks exact
        continuation (see ``RESUMABLE_CHANGES``). Returns the last logged training metrics and the final
        evaluation's metrics.
        """
        cfg = self.config
        if resume is not None:
            self._resume(resume, allow_config_change)
        else:
            if self.rank == 0:  # a fresh start in a used directory (e.g. killed before its first save)
                truncate_metrics(self.output_dir, 0)
            random.seed(cfg.seed + self.rank)
            np.random.seed(cfg.seed + self.rank)
            torch.manual_seed(cfg.seed + self.rank)
        self.engine.train()
        log = RunLogger(self.output_dir, rank=self.rank, total_steps=self.total_steps, initial_step=self.step,
                        progress_bar=cfg.progress_bar)
        log.log(self.step, {"trainable_params": self.num_trainable}, kind="setup")
        samples_per_step = cfg.micro_batch_size * cfg.grad_accum * self.world_size
        final: dict[str, float] = {}
        window_loss, window_logs, window_steps, window_start = 0.0, {}, 0, time.perf_counter()
        saved_at = self.step if resume is not None else None  # that checkpoint exists already
        evaluated_at = None
        try:
            while self.step < self.total_steps:
                lr = self.engine.lr_scheduler.get_last_lr()[0]
                loss, logs, query, grad_norm = self._run_step()
                self.step += 1
                if isinstance(loss, str):
                    self.nan_streak += 1
                    log.log(self.step, {"skipped": loss, "nan_streak": self.nan_streak, "lr": lr})
                    if self.nan_streak >= cfg.max_nan_steps:
                        kept = self.last_checkpoint or "none saved yet"
                        raise TrainingDiverged(
                            f"{self.nan_streak} steps in a row had a {loss} (steps "
                            f"{self.step - self.nan_streak + 1}..{self.step}); stopping. "
                            f"Last good checkpoint: {kept}")
                else:
                    self.nan_streak = 0
                    window_loss += loss.item()
                    for name, value in logs.items():
                        window_logs[name] = window_logs.get(name, 0.0) + value.item()
                    window_steps += 1
                    log.advance({"loss": loss.item(), "lr": lr}, skipped=self.skipped_counts())
                if window_steps and self.step % cfg.log_every == 0:
                    elapsed = time.perf_counter() - window_start
                    final = {"loss": window_loss / window_steps,
                             **{n: v / window_steps for n, v in window_logs.items()},
                             "lr": lr, "clips_per_s": window_steps * samples_per_step / elapsed}
                    if grad_norm is not None:
                        final["grad_norm"] = grad_norm
                    if query is not None:
                        final["query_collapse"] = query_collapse(query)
                    self._all_skipped()
                    log.log(self.step, {**final, "skipped_clips": self.skipped_counts()})
                    window_loss, window_logs, window_steps, window_start = 0.0, {}, 0, time.perf_counter()
                if cfg.save_every and self.step % cfg.save_every == 0:
                    self._save()
                    saved_at = self.step
                if self.eval_fn is not None and cfg.eval_every and self.step % cfg.eval_every == 0:
                    final = {**final, **self._evaluate(log)}
                    evaluated_at = self.step
            if saved_at != self.step:
                self._save()
            if self.eval_fn is not None and evaluated_at != self.step:
                final = {**final, **self._evaluate(log)}
            self._all_skipped()
        finally:
            log.close()
        return final
