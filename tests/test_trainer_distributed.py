"""Two CPU processes (torchrun, gloo, ZeRO-2) train step for step like one process on the same global
batch: micro batch m on each of 2 ranks vs micro batch 2m on 1 rank (the toy loss is a batch mean); and leave
no shared-memory buffer behind."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from _dist_train import run
from _toy import trainable_state

ROOT = Path(__file__).resolve().parents[1]


def losses(out):
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["lr"]) for r in rows if r["kind"] == "train"]


def test_two_processes_match_one(tmp_path):
    two = tmp_path / "two"
    # LOCAL_SIZE as the deepspeed launcher sets it: DeepSpeed's shared-memory all-reduce then runs (torchrun alone
    # does not set it, and DeepSpeed falls back to gloo's)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "LOCAL_SIZE": "2"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "_dist_train.py"), str(two), "2", "2"]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    one = run(str(tmp_path / "one"), 2, 4)
    got, want = losses(two), losses(tmp_path / "one")
    assert [s for s, _, _ in got] == [1, 2, 3, 4]
    for (_, a, lr_a), (_, b, lr_b) in zip(got, want):
        assert abs(a - b) < 1e-5 and lr_a == lr_b
    final_two = torch.load(two / "final_params.pt", weights_only=True)
    for name, value in trainable_state(one.engine.module).items():
        torch.testing.assert_close(final_two[name], value, atol=1e-5, rtol=0)
    # DeepSpeed's CPU all-reduce maps a 64 MiB /dev/shm file per process and never unlinks it; ours do at exit
    for rank in (0, 1):
        buffer, existed = (two / f"shm_rank{rank}.txt").read_text().split()
        assert existed == "True", "DeepSpeed no longer makes the buffer: the clean-up is dead code"
        assert not Path(buffer).exists()
