"""The trainer under faults (toy model, one CPU process, DeepSpeed with gloo): a planted pickle in any file a
resume reads is refused and does not run, SIGKILL at random moments then resume ends bit-identical to an
uninterrupted run, non-finite gradients are skipped and never saved, a changed config is refused on resume,
checkpoint files are fsynced before the rename."""
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from _env import fresh_env
from _toy import ToyDataset, ToyModel, ToyRun, trainable_state
from videoqf.train import checkpoint as ckpt
from videoqf.train.config import TrainConfig
from videoqf.train.loop import Trainer, TrainingDiverged

HERE = Path(__file__).resolve().parent


def make_config(tmp_path, name, **kw):
    base = dict(max_steps=4, micro_batch_size=4, grad_accum=1, lr=1e-2, log_every=1, save_every=2,
                progress_bar=False)
    return ToyRun(TrainConfig(**{**base, **kw}), str(tmp_path / name))


def make_trainer(run, **kw):
    torch.manual_seed(0)
    return Trainer(ToyModel(), ToyDataset(20), None, run.config, output_dir=run.output_dir, **kw)


class Payload:
    """Unpickling this creates ``marker``: proof that loading ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("stage", [0, 2])
def test_planted_pickle_in_any_resume_file_is_refused(tmp_path, stage):
    config = make_config(tmp_path, "run", zero_stage=stage, max_steps=2)
    make_trainer(config).fit()
    clean = ckpt.resolve_checkpoint(config.output_dir)
    pt_files = sorted(p.name for p in clean.glob("*.pt"))
    assert "mp_rank_00_model_states.pt" in pt_files and "rng_rank0.pt" in pt_files
    assert any("optim_states" in name for name in pt_files) == (stage == 2)
    for name in pt_files:
        marker = tmp_path / f"ran-{name}"
        victim = tmp_path / f"victim-{name}"
        shutil.copytree(clean, victim)
        state = torch.load(victim / name, weights_only=False)  # our own clean file
        state["payload"] = Payload(str(marker))
        torch.save(state, victim / name)
        refused = rf"refusing to load checkpoint file .*{name}: .*GLOBAL io\.open was not an allowed"
        with pytest.raises(ckpt.UnsafeCheckpointError, match=refused):
            make_trainer(config).fit(resume=victim)
        assert not marker.exists(), name
    # the config a resume compares is YAML: a python tag in it is refused too, and runs nothing
    victim = tmp_path / "victim-yaml"
    shutil.copytree(clean, victim)
    marker = tmp_path / "ran-yaml"
    with open(victim / "train_config.yaml", "a") as f:
        f.write(f"evil: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    with pytest.raises(Exception, match="python/object"):
        make_trainer(config).fit(resume=victim)
    assert not marker.exists()


def test_kill_and_resume_is_bit_identical(tmp_path):
    # five moments drawn at random (one of each kind at least), in the order a run meets them; the driver
    # trains 12 steps, saving every 2 and evaluating every 3
    rng = random.Random(25)
    draw = {"step": lambda: rng.randint(1, 12), "save": lambda: 2 * rng.randint(1, 5),
            "eval": lambda: 3 * rng.randint(1, 3)}
    moments = {(kind, at()) for kind, at in draw.items()}
    while len(moments) < 5:
        kind = rng.choice(sorted(draw))
        moments.add((kind, draw[kind]()))
    order = {"step": 0, "save": 1, "eval": 2}
    kills = ",".join(f"{k}:{s}" for k, s in sorted(moments, key=lambda m: (m[1], order[m[0]])))
    out = subprocess.run([sys.executable, str(HERE / "_kill_resume.py"), str(tmp_path), "--zero", "0", "2",
                          "--kills", kills], capture_output=True, text=True, timeout=300, env=fresh_env())
    assert out.returncode == 0, out.stderr[-3000:]
    ended = json.loads(out.stdout.strip().splitlines()[-1])
    for zero in ("0", "2"):
        assert ended[zero]["reference"] == "exit 0" and ended[zero]["last"] == "exit 0", ended
        assert ended[zero]["kills"] == ["signal 9"] * 5, (kills, ended)
        want = load_file(str(tmp_path / f"zero{zero}" / "reference.safetensors"))
        have = load_file(str(tmp_path / f"zero{zero}" / "resumed.safetensors"))
        assert want.keys() == have.keys()
        for name in want:
            assert torch.equal(want[name], have[name]), (zero, name, kills)
        rows = [json.loads(line) for line in (tmp_path / f"zero{zero}" / "resumed" / "metrics.jsonl").open()]
        assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 13))


def poison_gradients(model, steps):
    """Make ``out.weight``'s gradient NaN in the given training steps (counted by training forwards); the
    loss stays finite."""
    calls = {"n": 0}
    model.register_forward_pre_hook(lambda module, args: calls.__setitem__("n", calls["n"] + module.training))
    model.out.weight.register_hook(lambda grad: grad * float("nan") if calls["n"] in steps else grad)


@pytest.mark.parametrize("stage", [0, 2])
def test_nan_gradient_is_skipped(tmp_path, stage):
    config = make_config(tmp_path, "nan", zero_stage=stage, max_steps=5, save_every=0, eval_every=1)
    snapshots = {}
    def snapshot(model, step):
        snapshots[step] = trainable_state(model)
        return {}

    trainer = make_trainer(config, eval_fn=snapshot)
    poison_gradients(trainer.engine.module, {3})
    snapshots[0] = trainable_state(trainer.engine.module)
    trainer.fit()
    rows = [json.loads(line) for line in open(os.path.join(config.output_dir, "metrics.jsonl"))]
    skipped = {r["step"]: r["skipped"] for r in rows if r["kind"] == "train" and "skipped" in r}
    assert skipped == {3: "non-finite gradient"}
    for step in range(1, 6):
        same = all(torch.equal(snapshots[step - 1][n], snapshots[step][n]) for n in snapshots[step])
        assert same == (step == 3), step
        assert all(torch.isfinite(t).all() for t in snapshots[step].values())


@pytest.mark.parametrize("stage", [0, 2])
def test_nan_gradient_streak_names_a_finite_checkpoint(tmp_path, stage):
    config = make_config(tmp_path, "streak", zero_stage=stage, max_steps=10, save_every=2, keep_last=1,
                         max_nan_steps=3)
    trainer = make_trainer(config)
    poison_gradients(trainer.engine.module, set(range(3, 11)))
    with pytest.raises(TrainingDiverged, match=r"3 steps in a row had a non-finite gradient \(steps 3\.\.5\).*"
                                               r"Last good checkpoint: (\S+step_000004)") as info:
        trainer.fit()
    named = Path(str(info.value).rsplit(": ", 1)[1])
    assert ckpt.resolve_checkpoint(config.output_dir) == named
    check = make_trainer(make_config(tmp_path, "check", zero_stage=stage))
    ckpt.load_checkpoint(check.engine, named)
    assert all(torch.isfinite(t).all() for t in trainable_state(check.engine.module).values())


def test_no_checkpoint_from_non_finite_weights(tmp_path):
    config = make_config(tmp_path, "poisoned", max_steps=4, save_every=2, eval_every=3)

    def poison(model, step):
        with torch.no_grad():
            model.out.weight[0, 0] = float("inf")  # as if an update had gone wrong
        return {}

    trainer = make_trainer(config, eval_fn=poison)
    with pytest.raises(TrainingDiverged, match=r"step 4: the trained weights hold NaN/Inf.*step_000002"):
        trainer.fit()
    root = Path(config.output_dir) / "checkpoints"
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(("step", "tmp"))) == ["step_000002"]


def test_resume_refuses_a_changed_config(tmp_path):
    config = make_config(tmp_path, "run")
    make_trainer(config).fit()
    changed = make_config(tmp_path, "run", max_steps=6, lr=2e-2, log_every=2)
    with pytest.raises(ValueError, match=r"config changed.*lr: 0\.01 -> 0\.02; max_steps: 4 -> 6\)"):
        make_trainer(changed).fit(resume=config.output_dir)
    # logging-only changes continue exactly; breaking ones go through when asked for, and are said
    make_trainer(make_config(tmp_path, "run", log_every=2)).fit(resume=config.output_dir)
    resumed = make_trainer(changed)
    resumed.fit(resume=config.output_dir, allow_config_change=True)
    assert resumed.step == 6


def test_checkpoint_files_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_rename = os.fsync, os.rename
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "rename", lambda a, b: (events.append(("rename", str(a))), real_rename(a, b))[1])
    config = make_config(tmp_path, "sync", max_steps=2, save_every=0, zero_stage=2)
    make_trainer(config).fit()
    tmp = str(Path(config.output_dir) / "checkpoints" / "tmp-step_000002")
    renamed_at = events.index(("rename", tmp))
    synced = {path for kind, path in events[:renamed_at] if kind == "fsync"}
    final = Path(config.output_dir) / "checkpoints" / "step_000002"
    written = [p for p in final.rglob("*")]
    assert written
    for path in written:
        assert str(path).replace(str(final), tmp) in synced, path


def test_fsync_skips_a_file_another_rank_renamed_meanwhile(tmp_path, monkeypatch):
    (tmp_path / "weights.pt").write_bytes(b"w")
    real_walk = os.walk

    def walk_listing_a_temp_file(root):  # as another rank's atomic write: listed, then renamed before it is opened
        for folder, dirs, files in real_walk(root):
            yield folder, dirs, [".state.json.tmp", *files]

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "walk", walk_listing_a_temp_file)
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))[1])
    ckpt.fsync_tree(tmp_path)
    assert synced == [str(tmp_path / "weights.pt"), str(tmp_path)]


def test_skipped_clips_reach_metrics_and_the_progress_line(tmp_path):
    class Skipping(ToyDataset):
        """Item i reports that it passed over a bad clip (as VideoTextDataset does), i % 3 naming the reason."""

        def __getitem__(self, i):
            reason = ("missing", "bad_window", "truncated")[i % 3]
            return {**super().__getitem__(i), "skipped": {f"bad{i}": reason}}

    def collate(items):
        return {"x": torch.stack([it["x"] for it in items]), "y": torch.stack([it["y"] for it in items]),
                "skipped": {k: v for it in items for k, v in it["skipped"].items()}}

    config = make_config(tmp_path, "skips", max_steps=5, micro_batch_size=4, save_every=0)
    torch.manual_seed(0)
    trainer = Trainer(ToyModel(), Skipping(20), collate, config.config, output_dir=config.output_dir)
    trainer.fit()
    want = {"bad_window": 7, "missing": 7, "truncated": 6}  # one epoch: every item once
    assert trainer.skipped_counts() == want
    rows = [json.loads(line) for line in open(os.path.join(config.output_dir, "metrics.jsonl"))]
    assert [r["skipped_clips"] for r in rows if r["kind"] == "train"][-1] == want
    from videoqf.train.logging import RunLogger

    log = RunLogger(tmp_path / "bar", rank=0, total_steps=2, initial_step=0, progress_bar=True)
    log.advance({"loss": 1.0}, skipped=want)
    assert "bad_window:7 missing:7 truncated:6" in str(log.bar)
    log.close()


def test_resume_refuses_a_changed_experiment(tmp_path):
    from dataclasses import replace

    from videoqf.config import to_yaml
    from videoqf.experiment import ExperimentConfig
    from videoqf.recipes.run import CONFIG_NAME, check_same_experiment

    cfg = ExperimentConfig()
    (tmp_path / CONFIG_NAME).write_text(to_yaml(cfg))
    check_same_experiment(tmp_path, replace(cfg, eval=replace(cfg.eval, batch_size=3)), allow_change=False)
    other_data = replace(cfg, data=replace(cfg.data, annotations="other.jsonl"), run_stages=[])
    changed = r"experiment config changed since it was saved \(data.annotations: '' -> 'other.jsonl'\)"
    with pytest.raises(ValueError, match=changed):
        check_same_experiment(tmp_path, other_data, allow_change=False)
    check_same_experiment(tmp_path, other_data, allow_change=True)


def test_a_key_added_since_a_run_was_saved_changes_nothing_at_its_default(tmp_path):
    from dataclasses import replace

    import yaml

    from videoqf.config import to_yaml
    from videoqf.experiment import load_experiment
    from videoqf.recipes.run import CONFIG_NAME, changes_since

    cfg = load_experiment(["configs/synthetic.yaml", "configs/variants/cascaded.yaml"],
                          ["model.llm.arch=causal", "model.llm.path=unset"])
    saved = yaml.safe_load(to_yaml(cfg))
    del saved["model"]["objectives"]["vtg_label_smoothing"]  # as a run saved before the key existed
    (tmp_path / CONFIG_NAME).write_text(yaml.safe_dump(saved))
    assert changes_since(tmp_path, cfg) == []
    smoothed = replace(cfg, model=replace(cfg.model, objectives=replace(cfg.model.objectives, vtg_label_smoothing=0.2)))
    assert changes_since(tmp_path, smoothed) == ["model.objectives.vtg_label_smoothing: 0.1 -> 0.2"]
    saved["train"]["removed_knob"] = 3  # a key removed since: compared as written
    (tmp_path / CONFIG_NAME).write_text(yaml.safe_dump(saved))
    assert "train.removed_knob: 3 -> None" in changes_since(tmp_path, cfg)
