"""The DeepSpeed engine: process group, precision, the DeepSpeed config dict, ``deepspeed.initialize``.

DeepSpeed picks its accelerator by itself: ``cuda`` where torch sees a GPU, otherwise ``cpu`` (it logs
"Setting accelerator to CPU"; ``DS_ACCELERATOR=cpu`` forces it and skips the probe). On the CPU the
process group is ``gloo`` and training runs in fp32. The same code runs as a plain ``python`` process
(we fill in a one-process rendezvous), under ``torchrun --nproc_per_node N`` and under the
``deepspeed`` launcher (both set ``RANK``/``WORLD_SIZE``/``MASTER_*``/``LOCAL_RANK``).
Reference: DeepSpeed's config JSON (https://www.deepspeed.ai/docs/config-json/) and its ``"auto"``
convention as used by the transformers integration.
"""
from __future__ import annotations

import atexit
import copy
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator
from torch import nn

from videoqf.train.config import TrainConfig
from videoqf.train.optim import build_optimizer, build_scheduler

_PACKAGE = Path(__file__).resolve().parents[1]
# An installed package carries configs/ as videoqf/configs (setup.py's package data); a checkout has it beside.
TEMPLATE_DIR = next((d for d in (_PACKAGE / "configs" / "deepspeed", _PACKAGE.parent / "configs" / "deepspeed")
                     if d.is_dir()), _PACKAGE.parent / "configs" / "deepspeed")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> None:
    """Join (or create) the process group: gloo on a CPU, nccl on GPUs. Idempotent.

    Launched as plain ``python`` there is no rendezvous in the environment: we make a one-process one
    on a free local port.
    """
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_SIZE="1")
    backend = "gloo" if get_accelerator().device_name() == "cpu" else "nccl"
    shared_memory = backend == "gloo" and os.environ.get("WORLD_SIZE") != "1"
    if backend == "gloo" and not shared_memory:
        # one process reduces nothing: skip DeepSpeed's shared-memory all-reduce, a C++ op it compiles on a
        # machine's first run (~30 s) and whose 64 MiB /dev/shm file it never removes
        deepspeed.ops.__compatible_ops__[get_accelerator().create_op_builder("ShareMemCommBuilder").NAME] = False
    deepspeed.init_distributed(dist_backend=backend)
    if shared_memory:
        atexit.register(_remove_shm_buffer)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def _remove_shm_buffer() -> None:
    """Unlink this rank's DeepSpeed CPU all-reduce buffer, which DeepSpeed leaves in /dev/shm (64 MiB a process)."""
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR')}_"
            f"{os.environ.get('MASTER_PORT')}_{os.environ.get('RANK', '0')}")
    Path("/dev/shm", name).unlink(missing_ok=True)


def is_main_process() -> bool:
    """Whether this process is the one that evaluates, writes run-level files and reports (rank 0)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def shutdown_distributed() -> None:
    """Leave the process group: a gloo group left open makes the processes abort at exit."""
    if dist.is_initialized():
        dist.destroy_process_group()


def end_process(code: int) -> NoReturn:
    """Leave the process group, run the exit handlers and exit with ``code`` without Python's finalization: the end
    of a script that ran collectives.

    A gloo worker thread can still be releasing a finished collective's tensors when the interpreter finalizes; that
    needs the GIL, which a finalizing interpreter refuses by ending the thread, and the process then aborts
    ("terminate called without an active exception") after a run that succeeded (torch 2.14, more often on busy
    cores)."""
    shutdown_distributed()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def from_rank0(value):
    """Rank 0's ``value`` on every rank (e.g. a run directory named after the clock); ``value`` itself
    when not distributed."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def resolve_precision(precision: str) -> str:
    """"fp32", "bf16" or "fp16" for this device; "auto" is bf16 > fp16 on an accelerator, fp32 on CPU."""
    acc = get_accelerator()
    on_cpu = acc.device_name() == "cpu"
    if precision == "auto":
        if on_cpu:
            return "fp32"
        return "bf16" if acc.is_bf16_supported() else "fp16" if acc.is_fp16_supported() else "fp32"
    supported = {"fp32": True, "bf16": acc.is_bf16_supported(),
                 "fp16": acc.is_fp16_supported() and not on_cpu}
    if not supported[precision]:
        raise ValueError(f"train.precision={precision!r} is not supported on the "
                         f"{acc.device_name()!r} accelerator; use 'auto' or 'fp32'")
    return precision


def _fill_auto(node: Any, values: dict[str, Any], path: str, source: str) -> Any:
    """Replace every ``"auto"`` leaf by ``values[path]``; an ``"auto"`` we cannot fill is an error."""
    if isinstance(node, dict):
        return {k: _fill_auto(v, values, f"{path}.{k}" if path else k, source) for k, v in node.items()}
    if node == "auto":
        if path not in values:
            raise ValueError(f"{source}: {path!r} is 'auto' but the trainer has no value for it")
        return values[path]
    return node


def build_ds_config(config: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config dict: the ZeRO-stage template with its ``"auto"`` fields from ``config``."""
    path = Path(config.deepspeed_config) if config.deepspeed_config else TEMPLATE_DIR / f"zero{config.zero_stage}.json"
    if not path.is_file():
        raise FileNotFoundError(f"DeepSpeed config template not found: {path}")
    try:
        template = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from None
    stage = template.get("zero_optimization", {}).get("stage", 0)
    if stage != config.zero_stage:
        raise ValueError(f"{path}: zero_optimization.stage={stage} but train.zero_stage={config.zero_stage}")
    precision = resolve_precision(config.precision)
    # DeepSpeed's plain fp32 path (ZeRO 0) clips after a gradient norm of its own; the trainer computes the norm
    # anyway (for the log and the finite check), so it clips there instead, by the same rule
    trainer_clips = stage == 0 and precision == "fp32"
    values = {
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "train_batch_size": config.micro_batch_size * config.grad_accum * world_size,
        "gradient_clipping": 0.0 if trainer_clips else config.grad_clip,
        "bf16.enabled": precision == "bf16",
        "fp16.enabled": precision == "fp16",
    }
    return _fill_auto(copy.deepcopy(template), values, "", str(path))


def build_engine(model: nn.Module, config: TrainConfig, total_steps: int) -> deepspeed.DeepSpeedEngine:
    """``deepspeed.initialize`` with AdamW over the trainable parameters and the warm-up + cosine schedule.

    Frozen parameters are in no optimizer group, so DeepSpeed keeps no state (or ZeRO partition) for them.
    """
    init_distributed()
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, total_steps)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=build_ds_config(config, dist.get_world_size()))
    if dist.get_world_size() == 1 and config.zero_stage == 0:
        # one rank: the all-reduce would only copy every gradient into flat buckets and back
        engine.enable_backward_allreduce = False
    return engine
