"""Training harness on a toy model, one CPU process under DeepSpeed (gloo): the loss goes down, frozen
weights stay out of the optimizer and the checkpoints, stop-and-resume equals an uninterrupted run,
a killed save leaves the previous checkpoint loadable, NaN steps are skipped, too many stop the run."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from _env import fresh_env
from _toy import ToyDataset, ToyModel, ToyRun, trainable_state
from videoqf.config import ConfigError, load_config
from videoqf.train import checkpoint as ckpt
from videoqf.train.config import TrainConfig
from videoqf.train.data import MicroBatchStream, ResumableDistributedSampler, SeededDataset
from videoqf.train.engine import build_ds_config, resolve_precision
from videoqf.train.logging import RunLogger, query_collapse
from videoqf.train import loop
from videoqf.train.loop import Trainer, TrainingDiverged, on_every_rank
from videoqf.train.optim import lr_factor, param_groups


def make_config(tmp_path, name, **kw):
    base = dict(max_steps=6, micro_batch_size=4, grad_accum=2, lr=1e-2, warmup_steps=2, log_every=1,
                progress_bar=False)
    return ToyRun(TrainConfig(**{**base, **kw}), str(tmp_path / name))


def make_trainer(run, *, init_seed=0, dataset=None, model=None, **kw):
    torch.manual_seed(init_seed)
    return Trainer(model or ToyModel(), dataset or ToyDataset(20), None, run.config, output_dir=run.output_dir, **kw)


def read_metrics(config, kind="train"):
    """The ``kind`` records of a run's metrics.jsonl, without the wall-clock time each was logged at."""
    with open(os.path.join(config.output_dir, "metrics.jsonl")) as f:
        return [{k: v for k, v in r.items() if k != "time"} for r in map(json.loads, f) if r["kind"] == kind]


class Interrupt(Exception):
    pass


def interrupt_at(step):
    def eval_fn(model, s):
        if s == step:
            raise Interrupt
        return {}
    return eval_fn


# ----------------------------------------------------------------------------------- pure parts
def test_config_checks_and_yaml():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="half")
    with pytest.raises(ValueError, match="zero_stage"):
        TrainConfig(zero_stage=3)
    with pytest.raises(ConfigError, match="grad_accum"):
        load_config(TrainConfig, overrides=["grad_accum=0"])
    assert load_config(TrainConfig, overrides=["max_steps=7"]).max_steps == 7
    with pytest.raises(ConfigError, match="trainable"):  # the model's groups decide that (models/groups.py)
        load_config(TrainConfig, overrides=["trainable=[head.*]"])


def test_param_groups():
    model = ToyModel()
    groups = param_groups(model, TrainConfig(weight_decay=0.05))
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in groups[0]["params"]}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert decay == {"hidden.weight", "out.weight"}
    assert no_decay == {"query_tokens", "hidden.bias", "norm.weight", "norm.bias", "out.bias"}
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        Trainer(model, ToyDataset(4), None, TrainConfig(max_steps=1), output_dir="unused")


def test_the_trainer_clips_as_deepspeed_would(tmp_path):
    """On DeepSpeed's plain fp32 path the trainer clips with the gradient norm it computes anyway: the same
    training as DeepSpeed clipping itself (a template with the clip written in), and not a run without clipping."""
    template = json.loads((Path(__file__).parents[1] / "configs" / "deepspeed" / "zero0.json").read_text())
    written = tmp_path / "zero0-clip.json"
    written.write_text(json.dumps({**template, "gradient_clipping": 0.05}))
    assert build_ds_config(TrainConfig(grad_clip=0.05), 1)["gradient_clipping"] == 0.0  # left to the trainer
    assert build_ds_config(TrainConfig(grad_clip=0.05, zero_stage=2), 1)["gradient_clipping"] == 0.05
    states, norms = [], []
    runs = {"trainer": dict(grad_clip=0.05), "deepspeed": dict(grad_clip=0.0, deepspeed_config=str(written)),
            "none": dict(grad_clip=0.0)}
    for name, kw in runs.items():
        run = make_config(tmp_path, name, **kw)
        trainer = make_trainer(run)
        trainer.fit()
        states.append(trainable_state(trainer.engine.module))
        norms.append([r["grad_norm"] for r in read_metrics(run)])
    (ours, theirs, unclipped), (our_norms, _, _) = states, norms
    assert min(our_norms) > 0.05  # every step was clipped
    for name, value in ours.items():
        assert torch.allclose(value, theirs[name], atol=1e-6), name
    assert any(not torch.allclose(value, unclipped[name], atol=1e-4) for name, value in ours.items())


def test_lr_schedule():
    f = [lr_factor(s, warmup_steps=2, total_steps=10, min_lr_ratio=0.1) for s in range(12)]
    assert f[:3] == [0.5, 1.0, 1.0]
    assert all(a > b for a, b in zip(f[2:9], f[3:10]))
    assert f[9] == pytest.approx(0.1) and f[11] == pytest.approx(0.1)


def test_ds_config_from_template(tmp_path):
    cfg = build_ds_config(TrainConfig(micro_batch_size=3, grad_accum=5, grad_clip=0.5, zero_stage=2), 2)
    assert cfg["train_micro_batch_size_per_gpu"] == 3 and cfg["gradient_accumulation_steps"] == 5
    assert cfg["gradient_clipping"] == 0.5 and cfg["zero_optimization"]["stage"] == 2
    assert cfg["bf16"]["enabled"] is False and cfg["fp16"]["enabled"] is False  # fp32 on the CPU
    assert resolve_precision("auto") == "fp32"
    with pytest.raises(ValueError, match="fp16"):
        resolve_precision("fp16")
    bad = tmp_path / "ds.json"
    bad.write_text('{"zero_optimization": {"stage": 1}}')
    with pytest.raises(ValueError, match="stage=1"):
        build_ds_config(TrainConfig(deepspeed_config=str(bad)), 1)
    bad.write_text('{"zero_optimization": {"stage": 0}, "optimizer": {"params": {"lr": "auto"}}}')
    with pytest.raises(ValueError, match="optimizer.params.lr"):
        build_ds_config(TrainConfig(deepspeed_config=str(bad)), 1)


class CountingDataset(ToyDataset):
    def __init__(self, n):
        super().__init__(n)
        self.loaded = []

    def __getitem__(self, i):
        self.loaded.append(i)
        return super().__getitem__(i)


def test_sampler_shards_and_resumes():
    one = list(ResumableDistributedSampler(10, seed=3, epoch=1, rank=0, world_size=1))
    two = [list(ResumableDistributedSampler(10, seed=3, epoch=1, rank=r, world_size=2)) for r in range(2)]
    # rank r takes every 2nd position: 2 ranks x m samples = the same 2m samples (and seeds) as 1 rank
    assert sorted(two[0][:2] + two[1][:2]) == sorted(one[:4])
    assert sorted(i for i, _ in one) == list(range(10))
    assert one != list(ResumableDistributedSampler(10, seed=3, epoch=2, rank=0, world_size=1))
    assert list(ResumableDistributedSampler(10, seed=3, epoch=1, rank=0, world_size=1, start=6)) == one[6:]

    data = CountingDataset(10)
    full = MicroBatchStream(data, None, micro_batch_size=2, seed=0, rank=0, world_size=1)
    batches = [full.next() for _ in range(8)]  # crosses into epoch 1
    assert full.state() == {"epoch": 1, "position": 6}
    data.loaded.clear()
    resumed = MicroBatchStream(data, None, micro_batch_size=2, seed=0, rank=0, world_size=1, epoch=0, position=6)
    rest = [resumed.next() for _ in range(4)]
    assert len(data.loaded) == 8  # the 6 samples before the position were never loaded
    for a, b in zip(batches[3:7], rest):
        assert torch.equal(a["x"], b["x"])  # same samples and same per-sample noise
    workers = MicroBatchStream(data, None, micro_batch_size=2, seed=0, rank=0, world_size=1, num_workers=2)
    for a in batches[:5]:  # worker processes draw the same noise: it is seeded per sample, not per worker
        assert torch.equal(a["x"], workers.next()["x"])


def test_a_micro_batch_is_fetched_under_each_items_seed_and_leaves_the_training_rng_alone():
    seeded = SeededDataset(ToyDataset(10))
    items = [(3, 11), (7, 12), (3, 13)]
    torch.manual_seed(5)
    before = torch.get_rng_state()
    batch = seeded.__getitems__(items)
    assert torch.equal(torch.get_rng_state(), before)
    for item, got in zip(items, batch):
        assert torch.equal(got["x"], seeded[item]["x"])
    assert not torch.equal(batch[0]["x"], batch[2]["x"])  # one clip, two seeds: two draws of its noise


def test_query_collapse_metric_and_warning(tmp_path):
    same = torch.ones(2, 4, 8)
    assert query_collapse(same) == pytest.approx(1.0)
    eye = torch.eye(4)[None].expand(3, 4, 4)
    assert query_collapse(eye) == pytest.approx(0.0)
    pair = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    assert query_collapse(pair) == pytest.approx(1 / math.sqrt(2))
    log = RunLogger(tmp_path, rank=0, total_steps=2, initial_step=0, progress_bar=False)
    with pytest.warns(RuntimeWarning, match="query collapse 0.950"):
        log.log(1, {"loss": 1.0, "query_collapse": 0.95})
    log.close()
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert abs(row.pop("time") - time.time()) < 60  # when it was logged, for splitting a run's time by stage
    assert row == {"step": 1, "kind": "train", "loss": 1.0, "query_collapse": 0.95}


# ------------------------------------------------------------------------------ DeepSpeed runs
@pytest.mark.parametrize("stage", [0, 2])
def test_loss_goes_down_and_frozen_stays_out(tmp_path, stage):
    config = make_config(tmp_path, f"z{stage}", max_steps=40, zero_stage=stage, micro_batch_size=8,
                         grad_accum=1, lr=5e-2, save_every=20, keep_last=1)
    data = ToyDataset(64)

    def full_loss(model, step):
        return {"full_loss": model({"x": data.x, "y": data.y})["loss"].item()}

    trainer = make_trainer(config, dataset=data, eval_fn=full_loss)
    with torch.no_grad():
        start = full_loss(trainer.engine.module.eval(), 0)["full_loss"]
    frozen_before = trainer.engine.module.encoder.weight.clone()
    final = trainer.fit()
    assert len(read_metrics(config)) == 40
    assert final["full_loss"] < 0.5 * start, (start, final)
    module = trainer.engine.module
    assert torch.equal(module.encoder.weight, frozen_before)
    # frozen: no optimizer group holds them, no optimizer state
    frozen_ids = {id(p) for p in module.encoder.parameters()}
    base = trainer.engine.optimizer.optimizer if stage else trainer.engine.optimizer
    assert not frozen_ids & {id(p) for g in base.param_groups for p in g["params"]}
    # checkpoints: keep_last=1 leaves only the end one; trainable weights saved, frozen ones not
    root = tmp_path / f"z{stage}" / "checkpoints"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_000040"]
    assert (root / "latest").read_text() == "step_000040"
    saved = torch.load(root / "step_000040" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    assert "encoder.weight" not in saved and "encoder.bias" not in saved
    assert torch.equal(saved["out.weight"], module.out.weight)
    events = EventAccumulator(str(tmp_path / f"z{stage}" / "tensorboard")).Reload()
    assert len(events.Scalars("train/loss")) == 40 and len(events.Scalars("train/grad_norm")) == 40
    assert {"train/mse", "train/l1", "train/lr", "train/clips_per_s", "train/query_collapse"} <= set(
        events.Tags()["scalars"])
    assert (root / "step_000040" / "train_config.yaml").read_text().count("zero_stage: %d" % stage) == 1


@pytest.mark.parametrize("stage", [0, 2])
def test_stop_and_resume_equals_uninterrupted(tmp_path, stage):
    config = make_config(tmp_path, "full", zero_stage=stage, save_every=3)
    full = make_trainer(config)
    full.fit()
    reference = read_metrics(config)
    assert [r["step"] for r in reference] == [1, 2, 3, 4, 5, 6]

    config = make_config(tmp_path, "stopped", zero_stage=stage, save_every=3, eval_every=3)
    with pytest.raises(Interrupt):  # killed right after the step-3 checkpoint
        make_trainer(config, eval_fn=interrupt_at(3)).fit()
    resumed = make_trainer(config, init_seed=99, eval_fn=lambda model, step: {"step_seen": step})
    resumed.fit(resume=config.output_dir)
    got = read_metrics(config)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(reference, got):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6) and b["lr"] == pytest.approx(a["lr"], abs=1e-12)
    want, have = trainable_state(full.engine.module), trainable_state(resumed.engine.module)
    for name in want:
        torch.testing.assert_close(have[name], want[name], atol=1e-6, rtol=0)
    assert read_metrics(config, "eval") == [{"step": 6, "kind": "eval", "step_seen": 6.0}]


def test_killed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    config = make_config(tmp_path, "killed", save_every=3)
    trainer = make_trainer(config)
    real_rename = os.rename

    def killed_rename(src, dst):
        if os.path.basename(src) == "tmp-step_000006":
            raise Interrupt
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", killed_rename)
    with pytest.raises(Interrupt):
        trainer.fit()
    monkeypatch.setattr(os, "rename", real_rename)
    root = tmp_path / "killed" / "checkpoints"
    assert (root / "tmp-step_000006").is_dir()  # written, never committed
    assert ckpt.resolve_checkpoint(tmp_path / "killed") == root / "step_000003"
    resumed = make_trainer(config, init_seed=5)
    resumed.fit(resume=root)
    assert resumed.step == 6 and [r["step"] for r in read_metrics(config)] == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in root.glob("*step_*")) == ["step_000003", "step_000006"]
    # a model whose trainable parameters differ is refused, never partially loaded
    torch.manual_seed(0)
    out_only = ToyModel()
    for name, p in out_only.named_parameters():
        p.requires_grad_(name.startswith("out."))
    other = make_trainer(make_config(tmp_path, "other"), model=out_only)
    with pytest.raises(ValueError, match="trainable parameters differ"):
        other.fit(resume=root)
    with pytest.raises(ValueError, match="trainable parameters differ"):
        other.fit(resume=root, allow_config_change=True)
    (root / "latest").write_text("step_000009")
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ckpt.resolve_checkpoint(root)


def test_nan_steps_are_skipped(tmp_path):
    # 16 samples, 8 per step: each epoch is 2 steps and one of them holds the NaN sample (in either
    # micro-batch, so a partial accumulation has to be dropped: no gradient may be left after a step).
    # ZeRO-2 keeps reduced partitions of its own, so its run must also match stage 0's.
    losses = {}
    for stage in (0, 2):
        config = make_config(tmp_path, f"nan{stage}", zero_stage=stage, eval_every=1, max_nan_steps=3)
        snapshots = {}

        def snapshot(model, step):
            snapshots[step] = trainable_state(model)
            return {"grads_left": sum(p.grad is not None for p in model.parameters())}

        trainer = make_trainer(config, dataset=ToyDataset(16, nan_at=(5,)), eval_fn=snapshot)
        snapshots[0] = trainable_state(trainer.engine.module)
        trainer.fit()
        rows = read_metrics(config)
        assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
        skipped = [r["step"] for r in rows if "skipped" in r]
        assert len(skipped) == 3 and sorted({(s - 1) // 2 for s in skipped}) == [0, 1, 2]
        for step in range(1, 7):
            before, after = snapshots[step - 1], snapshots[step]
            unchanged = all(torch.equal(before[n], after[n]) for n in before)
            assert unchanged == (step in skipped), step
            assert all(torch.isfinite(t).all() for t in after.values())
        assert [r["grads_left"] for r in read_metrics(config, "eval")] == [0] * 6
        losses[stage] = [r.get("loss") for r in rows]
    assert losses[2] == pytest.approx(losses[0], abs=1e-6, nan_ok=True)


def test_a_flag_for_every_rank_travels_on_the_engines_device(monkeypatch):
    # NCCL reduces GPU tensors only: a CPU flag would stop a GPU run at its first save. A meta tensor stands for a
    # device other than the CPU here; the fake all-reduce records where the flag is and stops there (meta holds no
    # value to read back).
    seen = []

    class Reduced(Exception):
        pass

    def all_reduce(tensor, op=None):
        seen.append((tensor.device, op))
        raise Reduced

    monkeypatch.setattr(loop.dist, "all_reduce", all_reduce)
    with pytest.raises(Reduced):
        on_every_rank(True, torch.device("meta"))
    assert seen == [(torch.device("meta"), loop.dist.ReduceOp.MIN)]


def test_nan_streak_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = ToyDataset(16)
    snapshots = {}

    def poison_after_2(model, step):
        snapshots[step] = trainable_state(model)
        if step == 2:
            data.nan_at = set(range(16))
        return {}

    config = make_config(tmp_path, "diverge", max_steps=10, save_every=2, eval_every=2, max_nan_steps=3)
    trainer = make_trainer(config, dataset=data, eval_fn=poison_after_2)
    with pytest.raises(TrainingDiverged, match=r"3 steps in a row had a non-finite loss \(steps 3\.\.5\)"):
        trainer.fit()
    root = tmp_path / "diverge" / "checkpoints"
    assert ckpt.resolve_checkpoint(root) == root / "step_000004"  # saved mid-streak: weights still good
    check = make_trainer(make_config(tmp_path, "check"), init_seed=7)
    ckpt.load_checkpoint(check.engine, root)
    for name, value in trainable_state(check.engine.module).items():
        assert torch.equal(value, snapshots[2][name])


def test_one_process_builds_no_shared_memory_all_reduce():
    """A one-process run has nothing to reduce: no DeepSpeed shm op (compiled on a machine's first run) and no
    64 MiB /dev/shm buffer (tests/test_trainer_distributed.py checks that several processes remove theirs)."""
    script = ("import os; from pathlib import Path; from videoqf.train.engine import init_distributed; "
              "import deepspeed.comm as c; init_distributed(); e = os.environ; "
              "name = f\"deepspeed_allreduce_buffer_{os.getuid()}_{e['MASTER_ADDR']}_{e['MASTER_PORT']}_0\"; "
              "print(c.comm.cdb.shm_comm_op is None, Path('/dev/shm', name).exists())")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env=fresh_env())
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["True", "False"]
