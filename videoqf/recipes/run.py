"""Run an experiment: its stages, in order, under the DeepSpeed trainer, then evaluation.

The recipe loop (``run_experiment``) does, for each selected stage of ``cfg.stages``: build the stage's loss
(``videoqf.objectives.build_objective``), lock the model to the stage's parameter groups
(``videoqf.models.groups.lock``) and train it with ``videoqf.train.Trainer``.

A run directory holds ``experiment.yaml`` and one folder per stage (``stage1/``, ``stage2/``, ...: each with
``checkpoints/``, ``metrics.jsonl`` and ``tensorboard/``), and ``results.json``; a run started from an image
checkpoint (``model.init_from``) also holds ``init_from.json``, what it copied and what is new. Every checkpoint is
self-contained: the experiment config (``experiment.yaml``), the tokenizer, the frozen LLM and the learned
weights (``learned/model.safetensors``) lie beside DeepSpeed's files, which is what ``tools/caption.py`` and
``tools/evaluate.py`` read.
``results.json`` also counts the clips each stage and the evaluation skipped, by reason. A resumed run must
hold a complete checkpoint, and its saved experiment config must equal this one except where
``RESUMABLE_KEYS`` says (the trainer checks the effective train settings) unless ``allow_config_change``.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from videoqf.config import to_yaml
from videoqf.data.cached import collate_cached
from videoqf.data.collate import collate_clips
from videoqf.data.config import build_dataset
from videoqf.eval.model_eval import evaluate_model
from videoqf.experiment import ExperimentConfig, StageConfig, load_experiment
from videoqf.io import write_atomic
from videoqf.llm.tokenizer import load_tokenizer
from videoqf.models.collate import CaptionCollate
from videoqf.models.groups import lock
from videoqf.models.io import load_learned, save_learned
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.objectives import ModelWithLoss, build_objective
from videoqf.recipes.features import clip_overrides, experiment_features
from videoqf.train.checkpoint import config_changes, resolve_checkpoint
from videoqf.train.config import TrainConfig
from videoqf.train.engine import is_main_process
from videoqf.train.loop import Trainer

CONFIG_NAME = "experiment.yaml"
RESULTS_NAME = "results.json"  # written last, when a run has trained and been evaluated
# Experiment keys (prefixes) a resumed run may change and still continue exactly; the trainer judges train.*.
RESUMABLE_KEYS = ("eval.", "train.", "run_stages:", "data.features:")


def checkpoint_files(cfg: ExperimentConfig, model) -> dict:
    """What every checkpoint directory carries beside DeepSpeed's files."""
    files = {
        CONFIG_NAME: lambda p: Path(p).write_text(to_yaml(cfg)),
        "tokenizer": lambda p: model.tokenizer.save_pretrained(str(p)),
        "learned": lambda p: (Path(p).mkdir(), save_learned(model, p)),
    }
    if cfg.model.llm is not None and cfg.model.llm.path:
        files["lm"] = cfg.model.llm.path
    return files


def datasets(cfg: ExperimentConfig, model):
    """Training and held-out datasets; with ``data.features`` set, both read the feature cache (filled
    first with whatever it lacks)."""
    overrides = clip_overrides(model.vision)
    spec = None
    if cfg.data.features:
        spec = experiment_features(cfg, model.vision, model.audio)
    train = build_dataset(cfg.data, expected_spec=spec, **overrides)
    held_out = None
    if cfg.eval.annotations:
        held_out = build_dataset(replace(cfg.data, annotations=cfg.eval.annotations, caption_mode="first",
                                         max_bad_fraction=1.0), expected_spec=spec, **overrides)
        if cfg.eval.max_clips:
            held_out.truncate(cfg.eval.max_clips)
    return train, held_out


def make_collate(cfg: ExperimentConfig, tokenizer, tasks: list[str] = ()) -> CaptionCollate:
    """Batches of the run's data; ``tasks``: a stage's instruction tasks (questions and answers for captions)."""
    return CaptionCollate(tokenizer, cfg.model.max_text_len, base=collate_cached if cfg.data.features else collate_clips,
                          instructions=cfg.data.instructions, seed=cfg.data.seed, tasks=tasks)


def evaluation(cfg: ExperimentConfig, held_out, collate, *, captions: bool):
    pairs = json.loads(Path(cfg.eval.pairs).read_text()) if cfg.eval.pairs else None

    def run(model, step=None, progress: bool = False):
        return evaluate_model(model, held_out, collate, rerank_k=cfg.eval.rerank_k, batch_size=cfg.eval.batch_size,
                              pairs=pairs, captions=captions, max_new_tokens=cfg.eval.max_new_tokens,
                              num_beams=cfg.eval.num_beams, progress=progress)

    return run


def fit_feature_statistics(model, dataset, collate, max_clips: int, batch_size: int = 64) -> None:
    """Fit the model's feature standardisers on the first ``max_clips`` training items (a resumed run then
    loads the saved statistics over these)."""
    if not model.config.standardize_features:
        return
    count = min(max_clips, len(dataset))
    batches = (collate([dataset[i] for i in range(start, min(start + batch_size, count))])
               for start in range(0, count, batch_size))
    model.fit_feature_statistics(batches)


def latest_complete(stage_dir: Path) -> Path | None:
    try:
        return resolve_checkpoint(stage_dir / "checkpoints")
    except FileNotFoundError:
        return None


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a complete checkpoint of some stage (what ``resume`` continues)."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any(latest_complete(d) for d in run_dir.iterdir() if (d / "checkpoints").is_dir())


def check_resumable(run_dir: str | Path) -> None:
    """Raise ``FileNotFoundError`` unless ``run_dir`` holds a complete checkpoint of some stage to resume."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"cannot resume {run_dir}: no such directory")
    if not has_checkpoint(run_dir):
        raise FileNotFoundError(f"cannot resume {run_dir}: it holds no complete checkpoint "
                                "(a stage folder's checkpoints/ with a 'latest')")


def read_saved_config(path: Path) -> dict:
    """An experiment config saved as YAML, read through today's schema, so a key added since then holds its default;
    one that today's schema refuses (a key removed since) is read as written."""
    try:
        text = to_yaml(load_experiment([path]))
    except ValueError:
        text = path.read_text()
    return yaml.safe_load(text)


def changes_since(folder: Path, cfg: ExperimentConfig) -> list[str]:
    """How ``cfg`` differs from the experiment config saved in ``folder`` (``config_changes``' lines, through
    ``read_saved_config``: a key added since counts only where ``cfg`` moves it off its default)."""
    return config_changes(read_saved_config(folder / CONFIG_NAME), yaml.safe_load(to_yaml(cfg)))


def check_same_experiment(checkpoint: Path, cfg: ExperimentConfig, *, allow_change: bool) -> None:
    """Refuse to resume ``checkpoint`` when its experiment config differs from ``cfg`` beyond ``RESUMABLE_KEYS``."""
    changes = changes_since(checkpoint, cfg)
    breaking = [c for c in changes if not c.startswith(RESUMABLE_KEYS)]
    if breaking and not allow_change:
        raise ValueError(f"checkpoint {checkpoint}: the experiment config changed since it was saved ("
                         f"{'; '.join(breaking)}); resuming would not continue the run exactly. Restore these "
                         "values, or allow it explicitly (--allow-config-change)")
    if changes:
        print(f"resuming {checkpoint} with a changed config: {'; '.join(changes)}", flush=True)


def start_from_previous(model, run_dir: Path, previous: str, *, resume: bool) -> None:
    """A run that starts at a later stage continues what the stage before it learned: with ``resume``, the
    learned weights (and feature statistics) of that stage's latest complete checkpoint in ``run_dir``;
    otherwise, or without one, it says that the model starts untrained."""
    found = latest_complete(run_dir / previous) if resume else None
    if found is None:
        print(f"no {previous} checkpoint in {run_dir}: the model starts untrained (run {previous} first, or "
              "all stages)", flush=True)
        return
    print(f"starting from the {previous} checkpoint {found}", flush=True)
    load_learned(model, found / "learned")


def start_from_image(model, path: str, run_dir: Path) -> None:
    """``model.init_from``: the image checkpoint's weights by the variant's plan, said and kept in the run folder."""
    from videoqf.pretrained.video import init_run_model

    report = init_run_model(model, path)
    print(report.summary(), flush=True)
    if is_main_process():
        report.write(run_dir)


def stage_train_config(train: TrainConfig, stage: StageConfig) -> TrainConfig:
    """The trainer's settings for ``stage``: its own budget where it gives one, else ``train``'s."""
    def own(value, default):
        return default if value is None else value

    return replace(train, max_steps=own(stage.steps, train.max_steps), lr=own(stage.lr, train.lr),
                   weight_decay=own(stage.weight_decay, train.weight_decay),
                   warmup_steps=own(stage.warmup_steps, train.warmup_steps))


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, *, resume: bool = False,
                   allow_config_change: bool = False) -> tuple[dict, list[dict]]:
    """Train the selected stages into ``run_dir`` and evaluate; returns (metrics, samples), on rank 0 (the
    other ranks of a distributed run get empty ones). ``resume``: continue ``run_dir`` (it must hold a
    complete checkpoint); ``allow_config_change``: even with a config that breaks exact continuation."""
    run_dir = Path(run_dir)
    if resume:
        check_resumable(run_dir)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.train.seed)
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / CONFIG_NAME, to_yaml(cfg).encode())
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    model = VideoLanguageModel(cfg.model, tokenizer)
    train, held_out = datasets(cfg, model)
    collate = make_collate(cfg, tokenizer)
    fit_feature_statistics(model, train, collate, cfg.model.standardize_clips)
    names, selected = list(cfg.stages), cfg.selected_stages
    if cfg.model.init_from and not resume:
        start_from_image(model, cfg.model.init_from, run_dir)
    elif names.index(selected[0]) > 0:
        start_from_previous(model, run_dir, names[names.index(selected[0]) - 1], resume=resume)
    first_caption = next((n for n in names if cfg.stages[n].objective == "caption"), None)
    skipped: dict[str, dict[str, int]] = {}  # distinct clips skipped, by reason, per stage and in evaluation
    for name in selected:
        stage = cfg.stages[name]
        stage_dir = run_dir / name
        previous = latest_complete(stage_dir) if resume else None
        if previous is not None:
            check_same_experiment(previous, cfg, allow_change=allow_config_change)
            load_learned(model, previous / "learned")
        elif name == first_caption and model.llm_head is not None:
            print(f"{name}: the LLM's own head starts as a copy of the backend's head", flush=True)
            model.copy_head_for_llm()
        lock(model, stage.train, stage.freeze, where=f"stages.{name}")
        tcfg = stage_train_config(cfg.train, stage)
        eval_fn = None
        if held_out is not None and cfg.train.eval_every > 0:  # periodic evaluation inside the trainer
            evaluate = evaluation(cfg, held_out, collate, captions=stage.objective == "caption")
            eval_fn = lambda m, step, evaluate=evaluate: evaluate(m.model, step)[0]  # noqa: E731
        print(f"{name}: {tcfg.max_steps} steps of {stage.objective} on {cfg.model.variant} into {stage_dir}",
              flush=True)
        stage_collate = make_collate(cfg, tokenizer, stage.tasks) if stage.tasks else collate
        trainer = Trainer(ModelWithLoss(model, build_objective(stage.objective, model)), train, stage_collate, tcfg,
                          output_dir=stage_dir, eval_fn=eval_fn, extra_files=checkpoint_files(cfg, model))
        print(f"{name}: {trainer.num_trainable:,} trainable parameters (groups {stage.train}"
              + (f" less {stage.freeze}" if stage.freeze else "") + ")", flush=True)
        trainer.fit(resume=previous, allow_config_change=allow_config_change)
        skipped[name] = trainer.skipped_counts()
    metrics: dict = {}
    samples: list[dict] = []
    if not is_main_process():  # one process evaluates and writes results.json; the others return nothing
        return metrics, samples
    if held_out is not None:
        captions = model.bridge is not None and any(cfg.stages[n].objective == "caption" for n in selected)
        metrics, samples = evaluation(cfg, held_out, collate, captions=captions)(model, progress=True)
    if held_out is not None:
        skipped["eval"] = held_out.skipped_counts()
    write_atomic(run_dir / RESULTS_NAME,
                 json.dumps({"metrics": metrics, "skipped": skipped, "samples": samples}, indent=1).encode())
    return metrics, samples
