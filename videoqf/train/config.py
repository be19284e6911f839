"""Typed configuration of the generic DeepSpeed training harness (``videoqf.train``).

The optimisation defaults follow BLIP-2 (Li et al., 2023) pre-training: AdamW, weight decay 0.05,
linear warm-up then cosine decay to a floor, gradient clipping at 1.0.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ZERO_STAGES = (0, 1, 2)

# Parameters matched by these globs get no weight decay (besides every parameter with ndim < 2, i.e.
# biases, norm scales and scalar temperatures): learned query tokens and position embeddings are
# "where" and "what to ask" tables rather than weights, and shrinking them towards 0 only erases them.
# Named as this code names them: modules/position.py's tables (frame / segment positions) and the
# Q-Former text branch's position embedding.
DEFAULT_NO_DECAY = ("*query_tokens", "*position.table", "*text_embeddings.position.weight")


@dataclass
class TrainConfig:
    """Settings of one training run.

    seed: seeds parameters' dropout RNG (``seed + rank``), the data order and per-sample randomness.
    max_steps: optimizer steps to run; None runs ``epochs`` passes over the data instead.
    epochs: passes over the data when ``max_steps`` is None.
    micro_batch_size: samples per rank per forward pass; a step sees
        ``micro_batch_size * grad_accum * world_size`` samples.
    grad_accum: micro-batches accumulated per optimizer step.
    lr / min_lr_ratio / warmup_steps: linear warm-up to ``lr`` over ``warmup_steps`` steps, then cosine
        decay to ``lr * min_lr_ratio`` at the last step.
    weight_decay: AdamW decoupled weight decay, except on the ``no_decay`` parameters.
    betas / eps: AdamW moments.
    grad_clip: global gradient-norm clip (0 turns it off).
    zero_stage: DeepSpeed ZeRO stage (0, 1 or 2); selects ``configs/deepspeed/zero{stage}.json``.
    precision: "auto" is bf16 (else fp16) where the accelerator has it and fp32 on a CPU; an explicit
        "bf16"/"fp16" the device lacks is an error.
    deepspeed_config: another DeepSpeed JSON template instead of the stage's default one; its ZeRO stage
        must equal ``zero_stage``.
    log_every / eval_every / save_every: in optimizer steps (0 = only at the end for eval and save).
    keep_last: complete checkpoints kept (older ones are deleted).
    max_nan_steps: this many non-finite steps in a row stop the run.
    num_workers: DataLoader worker processes.
    no_decay: glob patterns of parameters without weight decay (besides all ndim < 2 ones).
    progress_bar: show the tqdm bar on rank 0.
    num_threads: torch intra-op threads per process (0: torch's default); tiny models on a few cores
        run faster on one thread, as parallel ops then never wait on a descheduled sibling.
    """

    seed: int = 0
    max_steps: int | None = None
    epochs: int = 1
    micro_batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0
    zero_stage: int = 0
    precision: str = "auto"
    deepspeed_config: str | None = None
    log_every: int = 10
    eval_every: int = 0
    save_every: int = 0
    keep_last: int = 2
    max_nan_steps: int = 5
    num_workers: int = 0
    no_decay: list[str] = field(default_factory=lambda: list(DEFAULT_NO_DECAY))
    progress_bar: bool = True
    num_threads: int = 0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision={self.precision!r}: expected one of {PRECISIONS}")
        if self.zero_stage not in ZERO_STAGES:
            raise ValueError(f"train.zero_stage={self.zero_stage}: expected one of {ZERO_STAGES}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"train.max_steps={self.max_steps}: must be >= 1 (or null to use epochs)")
        for name in ("epochs", "micro_batch_size", "grad_accum", "log_every", "keep_last", "max_nan_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)}: must be >= 1")
        for name in ("eval_every", "save_every", "warmup_steps", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name}={getattr(self, name)}: must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"train.min_lr_ratio={self.min_lr_ratio}: must be in [0, 1]")
