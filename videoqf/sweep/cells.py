"""The sweep's cells: every variant x seed trained and evaluated on the same data and budget, and every
variant's cost measured side by side; each result is saved as JSON so a restarted sweep skips it.

Layout of a sweep directory (``runs/sweep/`` by default)::

    <variant>/cost.json          parameters, LLM tokens, FLOPs per clip, train-step time, memory
    <variant>/seed<k>.json       held-out metrics of one seed (``videoqf.recipes.run.run_experiment``), the
                                 query collapse the trainer logged last in stage 1 and t2v R@1 at its end
    <variant>/seed<k>/           that run's checkpoints and logs (an interrupted run resumes from them)

The seed records may live in a directory of their own (``records_dir``, e.g. one kept under version control), so
that finished cells outlive the machine whose sweep directory held their runs; a chain whose source's run folder
is gone trains that source again before it starts from it.

Every JSON keeps the model file and overrides it was made with; a restart with other settings is
refused (use another sweep directory) rather than mixing budgets in one table. A seed record also keeps the
config its recipe resolved to (paths from the data cache or sweep directory on), and is checked against what the
recipe resolves to now, so a variant file or default changed since is refused too, on any machine; a cost record
made from another resolved config is measured again.

Costs come from the cached frozen-encoder features (the encoders' own cost is the same for every variant
and is not counted): FLOPs by ``torch.utils.flop_counter.FlopCounterMode`` over one micro-batch, divided
by its size (the stage-1 forward's VTM negatives scale with the batch, so its per-clip figure holds for
that batch size); the step (forward, backward, AdamW on the stage-1 parameters) is timed round-robin
across all variants (``videoqf.measure.interleaved_medians``); memory is the bytes autograd saves for
backward in a stage-1 forward, and on a GPU the peak allocated memory of a step too.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from videoqf.backends import BACKENDS
from videoqf.config import to_yaml
from videoqf.data.batch import CACHED_FRAMES
from videoqf.experiment import ExperimentConfig
from videoqf.io import write_atomic
from videoqf.llm.tokenizer import load_tokenizer
from videoqf.measure import interleaved_medians, saved_bytes
from videoqf.models.groups import lock
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.objectives import ModelWithLoss, build_objective
from videoqf.recipes.run import (CONFIG_NAME, RESULTS_NAME, changes_since, datasets, has_checkpoint, make_collate,
                                 read_saved_config, run_experiment)
from videoqf.recipes.synthetic import CONFIGS as CONFIG_DIR
from videoqf.train.checkpoint import config_changes
from videoqf.train.logging import METRICS_FILE
from videoqf.train.loop import to_device
NO_AUDIO_CACHE_SUFFIX = "-noaudio"


@dataclass(frozen=True)
class Variant:
    """A column of the sweep: ``model_file`` (relative to ``configs/``: a ``variants/<backend>.yaml`` or a
    ``recipes/<name>.yaml`` of the Q-Former family) over the synthetic default; ``overrides`` change it;
    ``init_from`` names the variant of the same sweep whose run of the same seed it starts from
    (``model.init_from``), which then trains first."""

    name: str
    model_file: str
    overrides: tuple[str, ...] = ()
    init_from: str = ""


# The stability kit of stage 1 (videoqf.objectives.stability), both parts on, at the README's weight.
STABILITY_KIT = ("model.objectives.query_diversity_weight=0.1", "model.objectives.adaptive_weighting=true")
KIT_SUFFIX = "+kit"


def _with_kit(variant: Variant) -> Variant:
    return Variant(variant.name + KIT_SUFFIX, variant.model_file, variant.overrides + STABILITY_KIT)


_RECIPES_ON_VIDEO = (  # the recipes that make sense on video, each with and without the stability kit
    # from scratch, so its frame Q-Former trains (the recipe keeps it frozen as BLIP-2's: benchmarks/init_chain.py)
    Variant("video-llama", "recipes/video-llama.yaml", ("stages.stage1.freeze=[]",)),
    Variant("video-qformer", "recipes/video-qformer.yaml"),
    Variant("framewise", "variants/framewise.yaml"),  # InstructBLIP-Video: BLIP-2 per frame, tokens concatenated
    Variant("pooled", "variants/pooled.yaml"),  # Video-ChatGPT
)

# Without the stability kit's other half: no gradient clipping and no warm-up (the defaults have both).
BARE = ("train.grad_clip=0", "train.warmup_steps=0")
BARE_SUFFIX = "-bare"


def _bare(variant: Variant) -> Variant:
    return Variant(variant.name + BARE_SUFFIX, variant.model_file, variant.overrides + BARE)


_CASCADED = Variant("cascaded", "variants/cascaded.yaml")
_SPATIOTEMPORAL = Variant("spatiotemporal", "variants/spatiotemporal.yaml")

STANDARD_VARIANTS = (
    _CASCADED,
    Variant("cascaded-noaudio", "variants/cascaded.yaml", ("model.backend.audio=false", "model.use_audio=false",
                                                          "stages.stage2.train=[projector,llm_head.top]")),
    Variant("cascaded-nope", "variants/cascaded.yaml", ("model.backend.temporal_pe=false",)),
    Variant("cascaded-8q", "variants/cascaded.yaml", ("model.backend.frame_qformer.num_queries=8",)),
    _with_kit(_CASCADED),
    _bare(_CASCADED),
    _SPATIOTEMPORAL,
    Variant("spatiotemporal-noexperts", "variants/spatiotemporal.yaml", ("model.backend.experts=false",)),
    # the experts' roles: only T-FFN's and SM-FFN's queries read the frames with their time embedding
    Variant("spatiotemporal-roles", "variants/spatiotemporal.yaml",
            ("model.backend.timed_experts=[temporal,semantic]",)),
    Variant("spatiotemporal-nopool", "variants/spatiotemporal.yaml", ("model.backend.attentive_pooling=false",)),
    Variant("spatiotemporal-nope", "variants/spatiotemporal.yaml", ("model.backend.temporal_pe=false",)),
    _with_kit(_SPATIOTEMPORAL),
    _bare(_SPATIOTEMPORAL),
    Variant("meanpool", "variants/meanpool.yaml"),
    *(v for recipe in _RECIPES_ON_VIDEO for v in (recipe, _with_kit(recipe))),
    # the chain: BLIP-2's image run, then the video recipes started from it (docs: benchmarks/init_chain.py)
    Variant("blip2", "recipes/blip2.yaml"),
    Variant("video-llama-init", "recipes/video-llama.yaml", init_from="blip2"),
    Variant("video-qformer-init", "recipes/video-qformer.yaml", init_from="blip2"),
)

# The sweep's own stage steps at batch 32, pinned apart from the embedded default's (configs/synthetic.yaml and the
# variants' files) so that the committed records outlive a change to the README's first run. The cascaded rows
# train stage 1 longer: their video Q-Former learns the direction of motion late (docs/decisions.md, 2026-12-03).
SWEEP_STEPS = {"stage1": 1200, "stage2": 800}
SWEEP_STEPS_OF = {"variants/cascaded.yaml": {"stage1": 1500}}
# Stage steps and evaluation size per budget, over the pinned steps. "quick" is a smoke budget for tests and a
# first look; "full" keeps the pinned steps and every held-out clip.
BUDGETS: dict[str, tuple[str, ...]] = {
    "quick": ("stages.stage1.steps=60", "stages.stage2.steps=30", "train.micro_batch_size=16",
              "train.warmup_steps=10", "eval.max_clips=48", "eval.max_new_tokens=16", "eval.rerank_k=8"),
    "full": (),
}
# What every sweep run shares whatever the budget: no checkpoints mid-stage, no progress bars, and each stage
# evaluated once, at its end (an interval past any stage's steps), so stage 1's retrieval shows what stage 2 forgets.
RUN_OVERRIDES = ("train.save_every=0", "train.eval_every=1000000", "train.keep_last=1", "train.progress_bar=false")


def available_variants(config_dir: Path = CONFIG_DIR) -> dict[str, Variant]:
    """The standard variants, then every registered backend that has ``configs/variants/<name>.yaml``."""
    out = {v.name: v for v in STANDARD_VARIANTS}
    for name in sorted(BACKENDS):
        if name not in out and (config_dir / "variants" / f"{name}.yaml").is_file():
            out[name] = Variant(name, f"variants/{name}.yaml")
    return out


def select_variants(names: str | None, config_dir: Path = CONFIG_DIR) -> list[Variant]:
    """``"a,b"`` -> those variants (an unknown name is an error), each chain's source first; None -> all
    available."""
    known = available_variants(config_dir)
    if not names:
        return list(known.values())
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"unknown sweep variant(s) {unknown}; available: {sorted(known)}")
    with_sources = [m for n in wanted for m in ([known[n].init_from] if known[n].init_from else []) + [n]]
    return [known[n] for n in dict.fromkeys(with_sources)]


# The experiment of a model file (a path under configs/) and overrides, e.g.
# ``videoqf.recipes.synthetic.embedded_experiment`` bound to a clip count.
Setup = Callable[[Path, list[str]], ExperimentConfig]


@dataclass
class SweepResult:
    costs: dict[str, dict]  # variant -> cost record
    cells: dict[str, list[dict]]  # variant -> one record per seed, in seed order
    ran: list[tuple[str, int]] = field(default_factory=list)  # (variant, seed) trained by this call


def variant_config(variant: Variant, seed: int, setup: Setup, overrides: list[str],
                   init_run: Path | None = None) -> tuple[ExperimentConfig, dict]:
    """The experiment config of one cell and the recipe that made it (model file + overrides, kept in its JSON).
    ``init_run``: the chain source's run folder (``model.init_from``), named in the recipe by variant only, so a
    record does not depend on where the runs were kept.

    ``train.seed`` is the cell's seed; ``model.frozen_init_seed`` stays as configured so every cell reads
    the same frozen-encoder features. The stages train for the sweep's pinned steps (``SWEEP_STEPS``) unless the
    overrides say otherwise; the pins are not in the recipe, the resolved config keeps them. A variant without
    audio (``model.use_audio=false``) has a feature cache spec without the audio encoder, so it reads its own
    cache: ``<data.features>-noaudio``.
    """
    recipe = {"model_file": variant.model_file,
              "overrides": [*RUN_OVERRIDES, *variant.overrides, *overrides, f"train.seed={seed}"]}
    chain = [f"model.init_from={init_run}"] if init_run is not None else []
    if variant.init_from:
        recipe["init_from"] = variant.init_from
    steps = {**SWEEP_STEPS, **SWEEP_STEPS_OF.get(variant.model_file, {})}
    pinned = [f"stages.{stage}.steps={n}" for stage, n in steps.items()]
    cfg = setup(CONFIG_DIR / variant.model_file, [*pinned, *recipe["overrides"], *chain])
    if not cfg.model.use_audio:
        cfg = replace(cfg, data=replace(cfg.data, features=cfg.data.features + NO_AUDIO_CACHE_SUFFIX, audio=False))
    return cfg, recipe


def stage1_last(run_dir: Path, key: str, kind: str = "train") -> float | None:
    """The last ``key`` the trainer logged (records of ``kind``) in a run's stage 1 (``metrics.jsonl``), or None."""
    path = Path(run_dir) / "stage1" / METRICS_FILE
    if not path.is_file():
        return None
    values = [rec[key] for rec in map(json.loads, path.read_text().splitlines())
              if key in rec and rec.get("kind") == kind]
    return values[-1] if values else None


def _read_checked(path: Path, recipe: dict) -> dict | None:
    """The saved record at ``path`` if there is one, made with ``recipe``; another recipe is an error."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("recipe") != recipe:
        raise ValueError(f"{path} was made with other settings ({record.get('recipe')}) than this sweep's "
                         f"({recipe}); use another --sweep-dir or delete it")
    return record


def portable_config(cfg: ExperimentConfig, roots: Sequence[str | Path]) -> dict:
    """``cfg`` as a nested dict in which every path under one of ``roots`` (the data cache, the sweep directory) is
    written from that root on (``<root>/...``), so the same cell set up on another machine gives the same dict."""
    prefixes = [str(root).rstrip("/") for root in roots]

    def walk(value):
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        for prefix in prefixes:
            if isinstance(value, str) and (value == prefix or value.startswith(prefix + "/")):
                return "<root>" + value[len(prefix):]
        return value
    return walk(yaml.safe_load(to_yaml(cfg)))


def _refuse_changed(where: Path, changes: list[str], fix: str) -> None:
    if changes:
        raise ValueError(f"{where} was trained with another config than its recipe now gives ("
                         f"{'; '.join(changes[:5])}{'; ...' if len(changes) > 5 else ''}): a variant file or a "
                         f"default changed since; {fix}")


def _check_recorded(path: Path, record: dict, cfg: ExperimentConfig, roots: Sequence[str | Path]) -> None:
    """Refuse a record whose cell was trained with another resolved config than ``cfg`` now is (read through
    today's schema: a key added since counts only off its default)."""
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / CONFIG_NAME
        saved.write_text(yaml.safe_dump(record["config"]))
        changes = config_changes(read_saved_config(saved), portable_config(cfg, roots))
    _refuse_changed(path, changes, "delete that record or use another --cells")


def _check_trained_as(run_dir: Path, cfg: ExperimentConfig) -> None:
    """Refuse a finished cell whose run was trained with another resolved config than ``cfg``."""
    if (run_dir / CONFIG_NAME).is_file():
        _refuse_changed(run_dir, changes_since(run_dir, cfg), "delete that cell or use another --sweep-dir")


def _config_digest(cfg: ExperimentConfig) -> str:
    return hashlib.sha256(to_yaml(cfg).encode()).hexdigest()[:16]


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=1).encode())  # a killed sweep leaves no half record


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (tiny models on few cores run far faster with 1), then restore."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _count(params) -> int:
    return sum(p.numel() for p in params)


def _prepare(cfg: ExperimentConfig, device: torch.device) -> tuple[ModelWithLoss, dict]:
    """A stage-1 model of ``cfg`` (seeded like a run) with its loss, and one micro-batch of cached training
    features."""
    torch.manual_seed(cfg.train.seed)
    model = VideoLanguageModel(cfg.model, load_tokenizer(cfg.model.tokenizer))
    train, _ = datasets(cfg, model)  # fills the feature cache (training and held-out clips) if needed
    size = min(cfg.train.micro_batch_size, len(train))
    batch = make_collate(cfg, model.tokenizer)([train[i] for i in range(size)])
    if CACHED_FRAMES not in batch:
        raise ValueError(f"{cfg.model.variant}: the sweep measures costs from cached features; set data.features")
    model.to(device)
    return ModelWithLoss(model, build_objective("stage1", model)), to_device(batch, device, torch.float32)


def _static_costs(trained: ModelWithLoss, batch: dict, cfg: ExperimentConfig) -> dict:
    """Parameters, LLM tokens and FLOPs per clip of one prepared model (no timing)."""
    model = trained.model
    trainable = set()
    stage1 = [name for name, stage in cfg.stages.items() if stage.objective == "stage1"]
    for name in [n for n in cfg.stages if n not in stage1] + stage1:  # ends locked to stage 1, the stage measured
        lock(model, cfg.stages[name].train, cfg.stages[name].freeze, where=f"stages.{name}")
        trainable |= {id(p) for p in model.parameters() if p.requires_grad}
    clips = batch[CACHED_FRAMES].shape[0]
    trained.train()
    # with grad enabled: FlopCounterMode's module tracker fails on parameters that need grad under no_grad
    with FlopCounterMode(display=False) as backend_fc:
        model.encode(batch)
    with FlopCounterMode(display=False) as stage1_fc:
        trained(batch)
    return {
        "params_trainable": _count(p for p in model.parameters() if id(p) in trainable),
        "params_backend": _count(model.backend.parameters()),
        "params_total": _count(model.parameters()),
        "num_frames": cfg.data.num_frames,
        "llm_tokens": model.backend.num_output_tokens(cfg.data.num_frames, audio=cfg.model.use_audio),
        "backend_flops_per_clip": backend_fc.get_total_flops() / clips,
        "stage1_flops_per_clip": stage1_fc.get_total_flops() / clips,
        "batch": clips,
    }


def measure_costs(cfgs: dict[str, ExperimentConfig], *, repeats: int = 5,
                  device: torch.device | None = None) -> dict[str, dict]:
    """Cost record of each variant; the train steps of all ``cfgs`` are timed round-robin in one go."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    prepared = {name: _prepare(cfg, device) for name, cfg in cfgs.items()}
    out = {name: _static_costs(model, batch, cfgs[name]) for name, (model, batch) in prepared.items()}

    def step_fn(model: ModelWithLoss, batch: dict) -> Callable[[], None]:
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            model(batch)["loss"].backward()
            opt.step()
        return step

    steps = {name: step_fn(model, batch) for name, (model, batch) in prepared.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = interleaved_medians(steps, repeats=repeats, sync=sync)
    for name, (model, batch) in prepared.items():
        rec = out[name]
        rec.update(step_s=times[name], clips_per_s=rec["batch"] / times[name], timed_with=sorted(prepared),
                   device=str(device), threads=torch.get_num_threads(),
                   saved_bytes=saved_bytes(lambda: model(batch)["loss"]), cuda_peak_bytes=None)
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            steps[name]()
            rec["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    return out


def recorded(records_dir: str | Path, variants: list[Variant], seeds: list[int]) -> dict[str, list[int]]:
    """The seeds of each variant whose cell has a record in ``records_dir`` (finished, whatever its settings)."""
    return {v.name: [s for s in seeds if (Path(records_dir) / v.name / f"seed{s}.json").is_file()] for v in variants}


def _train_cell(cfg: ExperimentConfig, run_dir: Path) -> tuple[dict, int]:
    """Train and evaluate one cell into ``run_dir`` (resuming a half-run one); its metrics and held-out count."""
    metrics, samples = run_experiment(cfg, run_dir, resume=has_checkpoint(run_dir))
    metrics["query_collapse"] = stage1_last(run_dir, "query_collapse")
    metrics["stage1_t2v_r1"] = stage1_last(run_dir, "t2v_r1", kind="eval")
    return metrics, len(samples)


def run_sweep(variants: list[Variant], seeds: list[int], *, setup: Setup, overrides: list[str] = (),
              sweep_dir: str | Path = "runs/sweep", records_dir: str | Path | None = None,
              roots: Sequence[str | Path] = (), repeats: int = 5, threads: int | None = 1,
              log: Callable[[str], None] = print) -> SweepResult:
    """Measure and train every (variant, seed) cell not yet recorded in ``records_dir`` (default ``sweep_dir``,
    which holds the runs and costs); return all records.

    ``setup(model_file, overrides)`` gives a cell's experiment, ``overrides`` the budget and any user changes
    (applied after the variant's own); ``threads`` sets torch's intra-op threads meanwhile. A record keeps its
    cell's resolved config with paths under ``roots`` (the data cache) or ``sweep_dir`` written from there on, and a
    record whose config differs from what its recipe resolves to now is refused.
    """
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    sweep_dir = Path(sweep_dir)
    overrides = list(overrides)
    result = SweepResult(costs={}, cells={v.name: [] for v in variants})
    with torch_threads(threads):
        pending: dict[str, tuple[ExperimentConfig, dict]] = {}
        for v in variants:
            cfg, recipe = variant_config(v, 0, setup, overrides)  # costs do not depend on the seed
            recipe = {**recipe, "repeats": repeats}
            saved = _read_checked(sweep_dir / v.name / "cost.json", recipe)
            if saved is None or saved.get("config_digest") != _config_digest(cfg):
                pending[v.name] = (cfg, recipe)
            else:
                result.costs[v.name] = saved
        if pending:
            log(f"measuring costs of {', '.join(pending)} ...")
            measured = measure_costs({n: cfg for n, (cfg, _) in pending.items()}, repeats=repeats)
            for name, (cfg, recipe) in pending.items():
                result.costs[name] = {"variant": name, "recipe": recipe, "config_digest": _config_digest(cfg),
                                      **measured[name]}
                _write(sweep_dir / name / "cost.json", result.costs[name])
        records_dir = Path(records_dir) if records_dir is not None else sweep_dir
        roots = [*roots, sweep_dir]
        by_name = {v.name: v for v in variants}
        for i, v in enumerate(variants):
            if v.init_from and v.init_from not in [u.name for u in variants[:i]]:
                raise ValueError(f"sweep variant {v.name} starts from {v.init_from}'s runs: list {v.init_from} first")
            for seed in seeds:
                source_run = sweep_dir / v.init_from / f"seed{seed}" if v.init_from else None
                cfg, recipe = variant_config(v, seed, setup, overrides, init_run=source_run)
                path = records_dir / v.name / f"seed{seed}.json"
                record = _read_checked(path, recipe)
                run_dir = sweep_dir / v.name / f"seed{seed}"
                if record is not None:
                    if "config" in record:
                        _check_recorded(path, record, cfg, roots)
                    else:  # made before records kept their config: check its run, then keep the config
                        _check_trained_as(run_dir, cfg)
                        if (run_dir / CONFIG_NAME).is_file():
                            record = {**record, "config": portable_config(cfg, roots)}
                            _write(path, record)
                    result.cells[v.name].append(record)
                    continue
                if source_run is not None and not (source_run / RESULTS_NAME).is_file():
                    log(f"training {v.init_from} seed {seed} again: {v.name} starts from its run, which is gone")
                    _train_cell(variant_config(by_name[v.init_from], seed, setup, overrides)[0], source_run)
                log(f"training {v.name} seed {seed} ...")
                start = time.perf_counter()
                metrics, held_out = _train_cell(cfg, run_dir)
                record = {"variant": v.name, "seed": seed, "recipe": recipe, "metrics": metrics,
                          "held_out_clips": held_out, "wall_s": time.perf_counter() - start,
                          "config": portable_config(cfg, roots)}
                _write(path, record)
                result.ran.append((v.name, seed))
                result.cells[v.name].append(record)
    return result
