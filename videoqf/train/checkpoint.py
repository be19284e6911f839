"""Atomic, self-contained, exactly-resumable DeepSpeed checkpoints.

Layout of ``<output_dir>/checkpoints``::

    latest                      the tag of the newest complete checkpoint (replaced atomically)
    step_000006/                one complete checkpoint ("tag")
        mp_rank_00_model_states.pt          DeepSpeed: trainable weights + buffers, lr scheduler
        *zero_pp_rank_*_optim_states.pt     DeepSpeed: optimizer state (partitioned under ZeRO)
        rng_rank0.pt, rng_rank1.pt, ...     python / numpy / torch RNG state of each rank
        trainer_state.json                  step, data position, world size, trainable names, ...
        train_config.yaml, <extra files>    what the run needs to be read back (config, tokenizer)
    tmp-step_000009/            a save in progress (or killed): never loaded, removed by the next save

Every rank writes into ``tmp-<tag>`` and fsyncs what it wrote; after a barrier rank 0 renames it to
``<tag>`` (an atomic ``rename`` on one file system), then replaces ``latest``. A save killed at any point
(or a machine losing power after it) leaves the previous checkpoint and ``latest`` intact.
Nothing read back runs code: DeepSpeed's ``.pt`` files and the RNG files are read with
``torch.load(weights_only=True)`` and an allow-list of DeepSpeed's own plain state classes
(:class:`SafeCheckpointEngine`); a file holding any other pickled object is refused with its path.
Frozen parameters are not saved (``exclude_frozen_parameters``): the model that loads the checkpoint
builds them from their own weights, and loading checks that every trainable parameter was restored. Reference: DeepSpeed ``save_checkpoint`` / ``load_checkpoint``.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
from deepspeed.runtime.zero.config import ZeroStageEnum
from deepspeed.utils.tensor_fragment import fragment_address
from torch import nn

# One crash-safe small-file writer for the package (temp file, fsync, os.replace, fsync of the folder).
from videoqf.io import write_atomic

LATEST = "latest"
STATE_FILE = "trainer_state.json"
TMP_PREFIX = "tmp-"

# What may be put beside a checkpoint: a file or directory (copied), or a function writing the path.
ExtraFile = str | os.PathLike | Callable[[Path], None]


# DeepSpeed's optimizer state pickles these plain state holders beside tensors; nothing else is allowed.
DEEPSPEED_STATE_CLASSES = (LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file holds a pickled object outside the tensor / DeepSpeed-state allow-list."""


def safe_load(path: str | os.PathLike, map_location=None) -> Any:
    """``torch.load`` that constructs tensors, containers and ``DEEPSPEED_STATE_CLASSES`` only."""
    try:
        with torch.serialization.safe_globals(list(DEEPSPEED_STATE_CLASSES)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).split("WeightsUnpickler error: ")[-1].split("\n")[0].split(" by default")[0]
        raise UnsafeCheckpointError(f"refusing to load checkpoint file {path}: it holds a pickled object that is "
                                    f"not plain tensor state ({reason}); it was not executed") from None


class SafeCheckpointEngine(TorchCheckpointEngine):
    """DeepSpeed's torch checkpoint engine with its loads through :func:`safe_load` (it uses
    ``weights_only=False``); DeepSpeed reads every model and optimizer file through its engine."""

    def load(self, path: str, map_location=None):
        return safe_load(path, map_location)


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root`` and the folders holding them, so a rename publishes written data. Other ranks
    may be writing there meanwhile: a file gone between listing and opening is skipped."""
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            except FileNotFoundError:  # another rank's atomic write renamed it; that rank syncs the file renamed to
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def tag_of(step: int) -> str:
    return f"step_{step:06d}"


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def isolated_rng(*, cuda: bool = True) -> Iterator[None]:
    """Run a block without changing python / numpy / torch RNG states (CUDA's too when ``cuda``)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if cuda and torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _put_extra(dest: Path, source: ExtraFile) -> None:
    if callable(source):
        source(dest)
        return
    source = Path(source)
    if source.is_dir():
        shutil.copytree(source, dest)
    elif source.is_file():
        shutil.copy2(source, dest)
    else:
        raise FileNotFoundError(f"extra checkpoint file {source} does not exist")


def save_checkpoint(engine, root: str | os.PathLike, step: int, state: dict[str, Any], *, keep_last: int,
                    extra_files: Mapping[str, ExtraFile] | None = None) -> Path:
    """Save a complete checkpoint ``root/step_<step>`` (all ranks call this); returns its path.

    state: JSON-able trainer state (step, data position, ...), written by rank 0.
    extra_files: ``{name: source}`` put beside the weights by rank 0 (see ``ExtraFile``).
    """
    root = Path(root)
    rank = dist.get_rank()
    tag, tmp_tag = tag_of(step), TMP_PREFIX + tag_of(step)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(TMP_PREFIX + "*"):  # left by a killed save
            shutil.rmtree(stale)
    dist.barrier()
    engine.save_checkpoint(str(root), tag=tmp_tag, save_latest=False, exclude_frozen_parameters=True)
    tmp_dir = root / tmp_tag
    torch.save(_rng_state(), tmp_dir / f"rng_rank{rank}.pt")
    if rank == 0:
        for name, source in (extra_files or {}).items():
            _put_extra(tmp_dir / name, source)
        write_atomic(tmp_dir / STATE_FILE, json.dumps(state, indent=1).encode())
    fsync_tree(tmp_dir)  # each rank, after its own files are written
    dist.barrier()
    if rank == 0:
        final, old = root / tag, root / (TMP_PREFIX + "old-" + tag)
        if final.exists():  # the same step saved again: `latest` may name it, so swap rather than delete first
            os.rename(final, old)
        os.rename(tmp_dir, final)
        if old.exists():
            shutil.rmtree(old)
        write_atomic(root / LATEST, tag.encode())
        complete = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())
        for old in complete[:-keep_last]:
            shutil.rmtree(old)
    dist.barrier()
    return root / tag


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``"key.sub: saved -> current"`` for every key whose value differs between two nested config dicts."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_changes(a, b, f"{prefix}{key}.")
        elif (list(a) if isinstance(a, tuple) else a) != (list(b) if isinstance(b, tuple) else b):
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint directory meant by ``path``: a tag directory, or a root whose ``latest`` names one."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    latest = path / LATEST
    if latest.is_file():
        tag_dir = path / latest.read_text().strip()
        if not (tag_dir / STATE_FILE).is_file():
            raise FileNotFoundError(f"{latest} names {tag_dir.name}, which is not a complete checkpoint")
        return tag_dir
    if (path / "checkpoints").is_dir():
        return resolve_checkpoint(path / "checkpoints")
    raise FileNotFoundError(f"no checkpoint at {path}: expected a directory with {STATE_FILE}, "
                            f"or one with a '{LATEST}' file (or a run directory holding checkpoints/)")


def _check_trainable_restored(model: nn.Module, tag_dir: Path) -> Callable:
    """A ``custom_load_fn`` for DeepSpeed: load non-strictly, then insist that only frozen weights were missing."""
    def load(src: dict[str, torch.Tensor], dst: nn.Module) -> None:
        result = dst.load_state_dict(src, strict=False)
        frozen = {n for n, p in dst.named_parameters() if not p.requires_grad}
        missing = sorted(set(result.missing_keys) - frozen)
        if missing or result.unexpected_keys:
            raise RuntimeError(f"checkpoint {tag_dir} does not fit the model: trainable weights missing "
                               f"{missing[:10]}, unexpected keys {sorted(result.unexpected_keys)[:10]}")
    return load


def load_checkpoint(engine, path: str | os.PathLike) -> dict[str, Any]:
    """Load weights, optimizer, scheduler and this rank's RNG from a checkpoint; return its trainer state."""
    tag_dir = resolve_checkpoint(path)
    state = json.loads((tag_dir / STATE_FILE).read_text())
    world = dist.get_world_size()
    if state["world_size"] != world:
        raise ValueError(f"checkpoint {tag_dir} was saved by {state['world_size']} ranks, this run has {world}: "
                         "the data order and the optimizer partitions would not continue exactly")
    trainable = sorted(n for n, p in engine.module.named_parameters() if p.requires_grad)
    if trainable != sorted(state["trainable"]):
        raise ValueError(f"checkpoint {tag_dir}: its trainable parameters differ from the model's "
                         f"(only in checkpoint: {sorted(set(state['trainable']) - set(trainable))[:10]}, "
                         f"only in model: {sorted(set(trainable) - set(state['trainable']))[:10]})")
    engine.checkpoint_engine = SafeCheckpointEngine(engine._config)
    load_path, _ = engine.load_checkpoint(str(tag_dir.parent), tag=tag_dir.name, load_module_strict=False,
                                          custom_load_fn=_check_trainable_restored(engine.module, tag_dir))
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint {tag_dir}")
    rng_file = tag_dir / f"rng_rank{dist.get_rank()}.pt"
    if not rng_file.is_file():
        raise FileNotFoundError(f"checkpoint {tag_dir} has no RNG state for rank {dist.get_rank()}: {rng_file}")
    _set_rng_state(safe_load(rng_file))
    return state
