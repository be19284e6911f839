"""End to end on the tiny synthetic set: both stages under DeepSpeed, then caption.py and evaluate.py."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from _env import fresh_env
from _tiny import tiny_config
from videoqf.config import to_yaml
from videoqf.recipes.run import run_experiment
from videoqf.train.checkpoint import resolve_checkpoint


@pytest.fixture(scope="module")
def trained_run(synthetic_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    metrics, samples = run_experiment(tiny_config(synthetic_dir), run_dir)
    return run_dir, metrics, samples


def test_both_stages_train_save_and_report(trained_run, synthetic_records, synthetic_dir):
    run_dir, metrics, samples = trained_run
    cfg = tiny_config(synthetic_dir)
    decay = {"stage1": cfg.train.weight_decay, "stage2": cfg.stages["stage2"].weight_decay}  # each stage's own
    assert decay["stage1"] != decay["stage2"]
    for key in ("t2v_r1", "v2t_r1", "cider", "bleu4", "caption_order_acc", "caption_sound_acc", "event_word_acc",
                "head_cider", "head_caption_order_acc", "head_event_word_acc", "event_colour_acc", "event_shape_acc",
                "event_action_acc", "head_event_detail_acc"):
        assert 0.0 <= metrics[key] <= 10.0, key
    assert samples and all("generated" in s and "head" in s for s in samples)
    # the held-out pairs: order ones by the matching head, every kind by the LLM's caption likelihood
    kinds = {r["pair"]["kind"] for r in synthetic_records["test"] if r["pair"]}
    keys = [f"lm_{kind}_pair_acc" for kind in kinds] + (["order_pair_acc"] if "order" in kinds else [])
    assert keys and all(0.0 <= metrics[key] <= 1.0 for key in keys), keys
    for stage in ("stage1", "stage2"):
        lines = [json.loads(line) for line in (run_dir / stage / "metrics.jsonl").read_text().splitlines()]
        assert any(line.get("kind") == "train" for line in lines), stage
        latest = (run_dir / stage / "checkpoints" / "latest").read_text().strip()
        ckpt = run_dir / stage / "checkpoints" / latest
        assert (ckpt / "experiment.yaml").is_file() and (ckpt / "learned" / "model.safetensors").is_file()
        assert (ckpt / "tokenizer").is_dir()
        assert OmegaConf.load(ckpt / "train_config.yaml").weight_decay == pytest.approx(decay[stage])
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["metrics"] == pytest.approx(metrics)


def test_stage2_starts_the_llms_own_head_from_the_stage1_head_and_trains_only_its_top_layer(trained_run):
    run_dir, _, _ = trained_run
    stage1, stage2 = (load_file(resolve_checkpoint(run_dir / stage / "checkpoints") / "learned" / "model.safetensors")
                      for stage in ("stage1", "stage2"))
    head = [k for k in stage1 if k.startswith("backend.head.")]
    assert head and all(torch.equal(stage1[k], stage2[k]) for k in head)  # retrieval keeps stage 1's head
    copied = [k for k in head if ".layers.0." in k]  # the copy's lower layer is not in stage 2's groups
    assert copied and all(torch.equal(stage2[k], stage2[k.replace("backend.head.", "llm_head.")]) for k in copied)
    top = [k for k in head if ".layers.1.cross_attn." in k]
    assert top and any(not torch.equal(stage2[k], stage2[k.replace("backend.head.", "llm_head.")]) for k in top)


def test_caption_tool_reports_bad_files_and_captions_the_rest(trained_run, synthetic_records, synthetic_dir):
    run_dir, _, _ = trained_run
    video = f"{synthetic_dir}/{synthetic_records['test'][0]['video']}"
    out = subprocess.run([sys.executable, "tools/caption.py", video, "missing.mp4", "--checkpoint", str(run_dir),
                          "--json", "--max-new-tokens", "6"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]  # stdout holds the JSON lines alone
    assert rows[0]["path"] == video and isinstance(rows[0]["caption"], str) and rows[0]["window"][1] > 0
    assert rows[1]["path"] == "missing.mp4" and "does not exist" in rows[1]["error"]
    assert "missing.mp4" in out.stderr


def test_evaluate_tool_matches_the_run(trained_run, synthetic_dir):
    run_dir, metrics, _ = trained_run
    out = subprocess.run([sys.executable, "tools/evaluate.py", "--checkpoint", str(run_dir), "--data",
                          f"{synthetic_dir}/test.jsonl", "--pairs", f"{synthetic_dir}/pairs.json", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    again = json.loads(out.stdout)  # the metrics alone: library logs go to stderr
    for key in [k for k in metrics if k.endswith(("_r1", "_r5", "pair_acc"))]:
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key


def test_evaluate_tool_on_plain_annotations_with_an_unreadable_clip(trained_run, synthetic_dir, tmp_path):
    """Annotations of the ordinary kind (video, caption; no synthetic spec) with a broken file among them: the
    dataset hands back the next readable clip in place of the broken one, and evaluation must not count that
    clip twice; the synthetic world's caption metrics, which parse its grammar, are left out."""
    run_dir, _, _ = trained_run
    rows = [json.loads(line) for line in Path(f"{synthetic_dir}/test.jsonl").read_text().splitlines()]
    rows = [{"video": f"{synthetic_dir}/{row['video']}", "caption": row["caption"]} for row in rows]
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video\n")
    rows.insert(1, {"video": str(broken), "caption": "a red square appears, in silence"})
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = subprocess.run([sys.executable, "tools/evaluate.py", "--checkpoint", str(run_dir), "--data", str(data),
                          "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads(out.stdout)
    assert metrics["clips"] == len(rows) - 1 and metrics["unreadable_skipped"] == 1, metrics
    assert "cider" in metrics and "head_cider" in metrics
    assert not [k for k in metrics if k.endswith(("order_acc", "sound_acc")) or "event_" in k], metrics
    assert "broken.mp4" in out.stderr


def test_stage2_alone_on_a_run_directory_starts_from_its_stage1(trained_run, synthetic_dir, tmp_path):
    """``--stage stage2 --resume RUN_DIR`` after a stage-1 run trains stage 2 on what stage 1 learned: with the
    projector alone trainable, the stage-2 checkpoint's backend (and feature statistics) are stage 1's."""
    run_dir, _, _ = trained_run
    shutil.copytree(run_dir / "stage1", tmp_path / "stage1")
    run_experiment(tiny_config(synthetic_dir, "run_stages=[stage2]", "eval.annotations=''",
                               "stages.stage2.train=[projector]"), tmp_path, resume=True)

    def learned(stage_dir):
        return load_file(resolve_checkpoint(stage_dir / "checkpoints") / "learned" / "model.safetensors")

    before, after = learned(tmp_path / "stage1"), learned(tmp_path / "stage2")
    kept = [k for k in before if k.startswith(("backend.", "vision_norm."))]
    assert kept and all(k in after for k in kept)
    for key in kept:
        assert torch.equal(before[key], after[key]), key


@pytest.mark.slow
def test_main_command_under_torchrun_makes_its_world_and_reports_once(tmp_path):
    """The README's first command under ``torchrun --nproc_per_node 2`` on an empty cache: one process makes
    the synthetic world, caption LM and features, both train into ONE run directory (rank 0 names it), and
    only rank 0 evaluates and prints."""
    tool = Path(__file__).resolve().parent.parent / "tools" / "train_video.py"
    env = {**os.environ, "VIDEOQF_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(tool),
                          "--variant", "cascaded", "--synthetic-clips", "16", "stages.stage1.steps=2",
                          "stages.stage2.steps=2", "train.micro_batch_size=4", "eval.max_new_tokens=6"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("held-out metrics") == 1
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs
    results = json.loads((runs[0] / "results.json").read_text())
    assert 0.0 <= results["metrics"]["t2v_r1"] <= 1.0 and results["samples"]
    for stage in ("stage1", "stage2"):
        assert (runs[0] / stage / "checkpoints" / "latest").is_file()


def test_main_command_without_held_out_clips_says_so(synthetic_dir, tmp_path):
    """A run with ``eval.annotations=''`` has nothing to report: the tool says it was not evaluated, where it
    used to fail on the empty metrics after training."""
    config = tmp_path / "tiny.yaml"
    config.write_text(to_yaml(tiny_config(synthetic_dir)))
    tool = Path(__file__).resolve().parent.parent / "tools" / "train_video.py"
    out = subprocess.run([sys.executable, str(tool), "--config", str(config), "--stage", "stage1", "--run-dir",
                          str(tmp_path / "run"), "stages.stage1.steps=1", "eval.annotations=''"],
                         env=fresh_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "not evaluated (eval.annotations is empty)" in out.stdout
    assert (tmp_path / "run" / "stage1" / "checkpoints" / "latest").is_file()


def test_a_bf16_run_evaluates_its_model_in_the_models_precision(synthetic_dir, tmp_path):
    # DeepSpeed's bf16 engine casts the model; the held-out batches (cached features) come in float32
    cfg = tiny_config(synthetic_dir, "train.precision=bf16", f"data.features={tmp_path / 'features'}")
    metrics, samples = run_experiment(cfg, tmp_path / "run")
    assert samples and 0.0 <= metrics["t2v_r1"] <= 1.0 and 0.0 <= metrics["cider"] <= 10.0


def test_two_runs_on_two_threads_train_alike(synthetic_dir, tmp_path):
    cfg = tiny_config(synthetic_dir, "train.num_threads=2", f"data.features={tmp_path / 'features'}")
    losses = []
    for name in ("a", "b"):
        metrics, _ = run_experiment(cfg, tmp_path / name)
        losses.append([json.loads(line).get("loss") for stage in ("stage1", "stage2")
                       for line in (tmp_path / name / stage / "metrics.jsonl").read_text().splitlines()])
        losses[-1].append(metrics)
    assert losses[0] == losses[1]
