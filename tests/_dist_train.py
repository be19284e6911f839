"""Run by tests/test_trainer_distributed.py under ``torchrun --nproc_per_node 2``: a few toy steps on CPU.

usage: _dist_train.py OUTPUT_DIR ZERO_STAGE MICRO_BATCH_SIZE
Writes OUTPUT_DIR/metrics.jsonl (rank 0), OUTPUT_DIR/final_params.pt (rank 0, trainable weights) and
OUTPUT_DIR/shm_rank<r>.txt: the path of this rank's DeepSpeed /dev/shm all-reduce buffer and whether it existed.
"""
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _toy import ToyDataset, ToyModel, trainable_state  # noqa: E402

from videoqf.train.config import TrainConfig  # noqa: E402
from videoqf.train.engine import end_process  # noqa: E402
from videoqf.train.loop import Trainer  # noqa: E402


def run(output_dir: str, zero_stage: int, micro_batch_size: int) -> Trainer:
    """The toy run the distributed test compares: the same global batch whatever the world size."""
    torch.manual_seed(0)
    model = ToyModel(dropout=0.0)  # dropout masks depend on the rank count; the loss must not
    config = TrainConfig(max_steps=4, micro_batch_size=micro_batch_size, grad_accum=2, lr=1e-2,
                         warmup_steps=1, log_every=1, zero_stage=zero_stage,
                         progress_bar=False)
    trainer = Trainer(model, ToyDataset(32), None, config, output_dir=output_dir)
    trainer.fit()
    return trainer


if __name__ == "__main__":
    out, stage, micro = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    trainer = run(out, stage, micro)
    if dist.get_rank() == 0:
        torch.save(trainable_state(trainer.engine.module), Path(out) / "final_params.pt")
    e = os.environ
    buffer = Path("/dev/shm",
                  f"deepspeed_allreduce_buffer_{os.getuid()}_{e['MASTER_ADDR']}_{e['MASTER_PORT']}_{e['RANK']}")
    (Path(out) / f"shm_rank{e['RANK']}.txt").write_text(f"{buffer} {buffer.exists()}")
    end_process(0)
