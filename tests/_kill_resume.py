"""Kill-and-resume driver for tests/test_faults.py: trains the toy model under DeepSpeed, SIGKILLs its
own process at chosen moments (inside a step, a save, an evaluation) and resumes until the run ends.

  python tests/_kill_resume.py OUT --zero 0 2 --kills step:3,save:4,eval:6

Each attempt runs in a process forked from this one (torch and DeepSpeed are imported once; this
process starts no thread and no process group, so forking it is safe). The final trainable weights of
the killed-and-resumed run go to OUT/zero<Z>/resumed.safetensors, those of an uninterrupted run to
OUT/zero<Z>/reference.safetensors; one JSON line on stdout lists how each attempt ended.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch._dynamo  # noqa: E402,F401  (imported by the first optimizer: once here, not in every attempt)
from deepspeed.comm.torch import build_shm_op  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from _toy import ToyDataset, ToyModel, trainable_state  # noqa: E402
from videoqf.train import checkpoint as ckpt  # noqa: E402
from videoqf.train.config import TrainConfig  # noqa: E402
from videoqf.train.loop import Trainer  # noqa: E402

STEPS, SAVE_EVERY, EVAL_EVERY = 12, 2, 3


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def train(run_dir: Path, zero: int, kill: tuple[str, int] | None, weights: Path) -> None:
    """One attempt, in the forked child: resume from the latest checkpoint if there is one."""
    torch.set_num_threads(1)
    config = TrainConfig(max_steps=STEPS, micro_batch_size=4, grad_accum=2, lr=1e-2, warmup_steps=2, log_every=1,
                         save_every=SAVE_EVERY, eval_every=EVAL_EVERY, keep_last=2, zero_stage=zero,
                         progress_bar=False)
    phase, at = kill or ("", -1)

    def evaluate(model, step):
        if phase == "eval" and step == at:
            die()
        return {"out_norm": model.out.weight.norm().item()}

    torch.manual_seed(0)
    trainer = Trainer(ToyModel(), ToyDataset(20), None, config, output_dir=run_dir, eval_fn=evaluate)
    micro = {"n": 0}

    def inside_step(module, args):
        micro["n"] += module.training
        if phase == "step" and trainer.step == at - 1 and micro["n"] % 2 == 0:  # after the step's 1st backward
            die()

    trainer.engine.module.register_forward_pre_hook(inside_step)
    real_fsync_tree = ckpt.fsync_tree

    def fsync_then_die(root):
        real_fsync_tree(root)
        if phase == "save" and root.name == "tmp-" + ckpt.tag_of(at):  # written, not yet renamed
            die()

    ckpt.fsync_tree = fsync_then_die
    try:
        previous = ckpt.resolve_checkpoint(run_dir)
    except FileNotFoundError:
        previous = None
    trainer.fit(resume=previous)
    save_file(trainable_state(trainer.engine.module), str(weights))


def attempt(run_dir: Path, zero: int, kill: tuple[str, int] | None, weights: Path) -> str:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            train(run_dir, zero, kill, weights)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--zero", type=int, nargs="+", default=[0])
    ap.add_argument("--kills", default="", help="comma-separated phase:step, phase in step/save/eval")
    args = ap.parse_args()
    build_shm_op()  # DeepSpeed's CPU comm extension, loaded once here instead of in every attempt
    kills = [(k.split(":")[0], int(k.split(":")[1])) for k in args.kills.split(",") if k]
    ended = {}
    for zero in args.zero:
        out = Path(args.out) / f"zero{zero}"
        out.mkdir(parents=True, exist_ok=True)
        ended[zero] = {"reference": attempt(out / "reference", zero, None, out / "reference.safetensors"),
                       "kills": [attempt(out / "resumed", zero, kill, out / "resumed.safetensors") for kill in kills]}
        ended[zero]["last"] = attempt(out / "resumed", zero, None, out / "resumed.safetensors")
    print(json.dumps(ended))
    return 0


if __name__ == "__main__":
    sys.exit(main())
