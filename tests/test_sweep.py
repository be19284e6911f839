"""The sweep (videoqf.sweep) on two variants x two seeds with a minimal budget on the tiny synthetic set."""
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from videoqf.experiment import load_experiment
from videoqf.sweep.cells import SweepResult, recorded, run_sweep, select_variants, variant_config
from videoqf.sweep.report import QUALITY, compare, findings, plot, report_body

TINY = [
    "model.vision.image_size=64", "data.num_frames=4", "train.micro_batch_size=4", "train.log_every=1",
    "stages.stage1.steps=2", "stages.stage2.steps=1", "eval.max_new_tokens=4", "eval.rerank_k=4",
    "model.llm.arch=causal",
    "model.llm.model_config={model_type: gpt2, n_layer: 1, n_embd: 32, n_head: 2, vocab_size: 96, "
    "n_positions: 128, bos_token_id: 5, eos_token_id: 3, pad_token_id: 0}",
]


@pytest.fixture(scope="module")
def sweep(synthetic_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")

    def setup(model_file, overrides):
        return load_experiment(["configs/synthetic.yaml", model_file], [
            f"data.annotations={synthetic_dir}/train.jsonl", f"eval.annotations={synthetic_dir}/test.jsonl",
            f"eval.pairs={synthetic_dir}/pairs.json", f"model.tokenizer={synthetic_dir}",
            f"data.features={root}/features", *overrides])

    def run(extra=(), sweep_dir=root / "cells"):
        return run_sweep(select_variants("cascaded-noaudio,meanpool"), [0, 1],
                         setup=lambda f, o: setup(f, [*o, *extra]), overrides=TINY, sweep_dir=sweep_dir,
                         repeats=1, log=lambda _: None)

    return root, run, run()


def test_cells_are_measured_trained_and_tabled(sweep, synthetic_dir, tmp_path):
    root, _, result = sweep
    assert result.ran == [("cascaded-noaudio", 0), ("cascaded-noaudio", 1), ("meanpool", 0), ("meanpool", 1)]
    # the audio-free variant reads its own cache (another spec); the other one the shared cache
    assert (root / "features-noaudio" / "index.json").is_file() and (root / "features" / "index.json").is_file()
    cas, mean = result.costs["cascaded-noaudio"], result.costs["meanpool"]
    assert cas["llm_tokens"] == 8 and mean["llm_tokens"] == 8  # video queries only: no audio tokens, pooled frames
    for cost in (cas, mean):
        assert 0 < cost["params_trainable"] < cost["params_total"]
        assert 0 < cost["backend_flops_per_clip"] < cost["stage1_flops_per_clip"]
        assert cost["step_s"] > 0 and cost["saved_bytes"] > 0 and cost["batch"] == 4
        assert cost["threads"] == 1  # run_sweep's default, whatever the process had
    first_loss = [next(rec["loss"] for rec in map(json.loads, (root / "cells" / "meanpool" / f"seed{s}" / "stage1" /
                                                               "metrics.jsonl").read_text().splitlines())
                       if rec.get("kind") == "train") for s in (0, 1)]
    assert first_loss[0] != first_loss[1]  # train.seed reaches the init and the data order
    assert [c["seed"] for c in result.cells["meanpool"]] == [0, 1]

    png = plot(result, tmp_path / "sweep.png")
    assert png.is_file() and png.stat().st_size > 10_000
    text = report_body(result, budget="test")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if re.match(r"\| (cascaded|meanpool)", line)}
    assert set(rows) == {"cascaded-noaudio", "meanpool"}
    # a pair column is n/a exactly when the tiny held-out split has no pair of its kind
    pairs = json.loads((Path(synthetic_dir) / "pairs.json").read_text())
    measured = [key in result.cells["meanpool"][0]["metrics"] for key, _ in QUALITY]
    assert measured == [True, True, bool(pairs["order"]), True, bool(pairs["sound"]), True, True, True]
    # stage 1 was evaluated at its end, so the forgetting column has its retrieval
    assert all(0 <= c["metrics"]["stage1_t2v_r1"] <= 1 for cells in result.cells.values() for c in cells)
    assert "forgetting" in text
    assert not all(measured)  # the n/a path is exercised
    for line in rows.values():
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        assert len(cells) == 8 + len(QUALITY)
        assert [c == "n/a" for c in cells[8:]] == [not m for m in measured]
        numbers = [float(x.replace(",", "")) for c in cells for x in re.findall(r"-?\d[\d,]*(?:\.\d+)?", c)]
        assert len(numbers) == 8 + 3 * sum(measured) and all(math.isfinite(x) for x in numbers)
    assert "seed spread" in text and "seeds [0, 1]" in text and "interleaved across variants on 1 torch thread;" in text
    assert result.cells["meanpool"][0]["held_out_clips"] == 4 and "1/4 = 0.250" in text


def test_rerun_skips_finished_cells(sweep):
    _, run, first = sweep
    again = run()
    assert again.ran == []
    assert again.cells == first.cells and again.costs == first.costs


def test_a_cell_trained_from_another_resolved_config_is_refused(sweep, tmp_path):
    root, run, first = sweep
    shutil.copytree(root / "cells", tmp_path / "cells")
    # same recipe text (model file + overrides), but a default under it changed since the cells were trained
    with pytest.raises(ValueError, match=r"trained with another config.*train\.lr: 0\.0002 -> 0\.0003"):
        run(extra=["train.lr=3.0e-4"], sweep_dir=tmp_path / "cells")
    remeasured = json.loads((tmp_path / "cells" / "meanpool" / "cost.json").read_text())
    assert remeasured["config_digest"] != first.costs["meanpool"]["config_digest"]


def test_the_sweep_trains_its_pinned_steps_whatever_the_embedded_default_says(tmp_path):
    shorter = tmp_path / "synthetic.yaml"  # the embedded default, changed since the records were made
    shorter.write_text(Path("configs/synthetic.yaml").read_text().replace("steps: 1200", "steps: 300")
                       .replace("steps: 800", "steps: 200"))
    cascaded_file = tmp_path / "cascaded.yaml"
    cascaded_file.write_text(Path("configs/variants/cascaded.yaml").read_text().replace("steps: 1500", "steps: 400"))

    def setup(model_file, overrides):
        model_file = cascaded_file if Path(model_file).name == "cascaded.yaml" else model_file
        return load_experiment([shorter, model_file], ["model.llm.arch=causal", "model.llm.path=unset", *overrides])

    def steps(variant, overrides=()):
        cfg, recipe = variant_config(select_variants(variant)[0], 0, setup, list(overrides))
        return cfg.stages["stage1"].steps, cfg.stages["stage2"].steps, recipe["overrides"]

    assert setup("configs/variants/meanpool.yaml", []).stages["stage1"].steps == 300
    assert steps("cascaded-nope")[:2] == (1500, 800) and steps("meanpool")[:2] == (1200, 800)
    s1, s2, recipe = steps("cascaded", ["stages.stage1.steps=5"])
    assert (s1, s2) == (5, 800)  # a budget's or the user's overrides win
    assert not any(o.startswith("stages.stage2.steps") for o in recipe)  # the record's recipe is what was asked


def fake(metric_by_variant: dict[str, list[float]]) -> SweepResult:
    cells = {v: [{"seed": s, "metrics": {"order_pair_acc": x}, "held_out_clips": 10} for s, x in enumerate(xs)]
             for v, xs in metric_by_variant.items()}
    return SweepResult(costs={}, cells=cells)


def test_a_difference_counts_only_beyond_the_seed_spread():
    apart = fake({"cascaded": [0.8, 0.9], "cascaded-nope": [0.5, 0.6]})
    assert "cascaded beats cascaded-nope by +0.300 on every seed" in compare(apart, "cascaded", "cascaded-nope",
                                                                              "order_pair_acc")
    reversed_ = compare(apart, "cascaded-nope", "cascaded", "order_pair_acc")
    assert "cascaded beats cascaded-nope by +0.300" in reversed_ and "against the expectation" in reversed_
    overlap = fake({"cascaded": [0.5, 0.9], "cascaded-nope": [0.6, 0.7]})
    assert "no difference beyond seed spread" in compare(overlap, "cascaded", "cascaded-nope", "order_pair_acc")
    single = fake({"cascaded": [0.9], "cascaded-nope": [0.5]})
    assert "single seed" in compare(single, "cascaded", "cascaded-nope", "order_pair_acc")
    text = "\n".join(findings(overlap))
    assert "temporal PE on vs off" in text and "order_pair_acc 0.400" in text  # the largest seed range


def test_lower_query_collapse_is_the_better_side():
    def collapse(by_variant):
        return SweepResult(costs={}, cells={v: [{"seed": s, "metrics": {"query_collapse": x}, "held_out_clips": 10}
                                                for s, x in enumerate(xs)] for v, xs in by_variant.items()})

    kit_lower = collapse({"pooled+kit": [0.1, 0.2], "pooled": [0.5, 0.6]})
    assert "pooled+kit beats pooled by -0.400 on every seed" in compare(kit_lower, "pooled+kit", "pooled",
                                                                        "query_collapse")
    kit_higher = collapse({"pooled+kit": [0.5, 0.6], "pooled": [0.1, 0.2]})
    assert "against the expectation" in compare(kit_higher, "pooled+kit", "pooled", "query_collapse")
    text = "\n".join(findings(kit_lower))
    assert "stability kit on vs off** (pooled+kit vs pooled)" in text


def test_the_chain_trains_its_source_first_and_starts_from_its_run(synthetic_dir, tmp_path):
    def setup(model_file, overrides):
        return load_experiment(["configs/synthetic.yaml", model_file], [
            f"data.annotations={synthetic_dir}/train.jsonl", f"eval.annotations={synthetic_dir}/test.jsonl",
            f"eval.pairs={synthetic_dir}/pairs.json", f"model.tokenizer={synthetic_dir}",
            f"data.features={tmp_path}/features", *overrides])

    chain = select_variants("video-qformer-init")
    assert [v.name for v in chain] == ["blip2", "video-qformer-init"]
    with pytest.raises(ValueError, match="list blip2 first"):
        run_sweep(chain[1:], [0], setup=setup, overrides=TINY, sweep_dir=tmp_path / "cells", repeats=1,
                  log=lambda _: None)
    def run(sweep_dir=tmp_path / "cells"):
        return run_sweep(chain, [0], setup=setup, overrides=TINY, sweep_dir=sweep_dir,
                         records_dir=tmp_path / "records", repeats=1, log=lambda _: None)

    assert recorded(tmp_path / "records", chain, [0, 1]) == {"blip2": [], "video-qformer-init": []}
    assert run().ran == [("blip2", 0), ("video-qformer-init", 0)]
    assert recorded(tmp_path / "records", chain, [0, 1]) == {"blip2": [0], "video-qformer-init": [0]}
    report = json.loads((tmp_path / "cells" / "video-qformer-init" / "seed0" / "init_from.json").read_text())
    assert report["source"] == str(tmp_path / "cells" / "blip2" / "seed0") and report["copied"]
    record = json.loads((tmp_path / "records" / "video-qformer-init" / "seed0.json").read_text())
    assert record["recipe"]["init_from"] == "blip2"  # by name: the record holds no machine's path
    assert not any("init_from" in o for o in record["recipe"]["overrides"])

    # another machine: the records were kept (committed), the runs were not
    shutil.rmtree(tmp_path / "cells")
    assert run(tmp_path / "elsewhere").ran == []
    assert record["config"]["model"]["init_from"] == "<root>/blip2/seed0"  # a path from its root on
    with pytest.raises(ValueError, match=r"seed0.json was trained with another config.*train\.weight_decay"):
        run_sweep(chain, [0], setup=lambda f, o: setup(f, [*o, "train.weight_decay=0.3"]), overrides=TINY,
                  sweep_dir=tmp_path / "cells", records_dir=tmp_path / "records", repeats=1, log=lambda _: None)
    (tmp_path / "records" / "video-qformer-init" / "seed0.json").unlink()
    assert run().ran == [("video-qformer-init", 0)]  # blip2's record stands; its run is made again to start from
    assert (tmp_path / "cells" / "blip2" / "seed0" / "results.json").is_file()


def test_the_shortcut_check_flags_an_order_blind_variant_above_chance():
    leaking = "\n".join(findings(fake({"meanpool": [0.40, 0.50], "cascaded-nope": [0.0, 0.30]})))
    assert "shortcut check" in leaking and "leaks order" in leaking and "meanpool order_pair_acc" in leaking
    assert "cascaded-nope order_pair_acc" not in leaking.split("every seed:")[1]  # one seed above chance is not enough
    clean = "\n".join(findings(fake({"meanpool": [0.0, 0.25], "cascaded-nope": [0.0, 0.0]})))
    assert "no order leak found" in clean


def test_clipping_and_warm_up_are_compared_without_the_kit_row():
    text = "\n".join(findings(fake({"cascaded": [0.8, 0.9], "cascaded-bare": [0.5, 0.6]})))
    assert "gradient clipping and warm-up on vs off** (cascaded vs cascaded-bare)" in text


def test_status_counts_the_cells_and_their_time(tmp_path, capsys):
    from benchmarks.sweep import print_status
    variants = select_variants("cascaded,meanpool")
    for seed, wall in ((0, 600.0), (1, 1200.0)):
        (tmp_path / "cascaded").mkdir(exist_ok=True)
        (tmp_path / "cascaded" / f"seed{seed}.json").write_text(json.dumps({"wall_s": wall}))
    print_status(tmp_path, variants, [0, 1, 2])
    out = capsys.readouterr().out
    assert "cascaded: recorded seeds [0, 1] (30 min), left [2]" in out
    assert "meanpool: recorded seeds -, left [0, 1, 2]" in out
    assert "4 of 6 cells left" in out
    # 0.5 h spent; left: cascaded's one at its mean 900 s, meanpool's three at the mean of all, 900 s
    assert "took 0.5 h of cell time" in out and "about 1.0 h of cell time" in out


def test_the_chain_rows_are_compared_with_their_recipes_from_scratch():
    cells = {"video-llama-init": [0.8, 0.9], "video-llama": [0.5, 0.6], "video-qformer": [0.7]}
    text = "\n".join(findings(fake(cells)))
    assert "Video-LLaMA from the BLIP-2 run vs from scratch** (video-llama-init vs video-llama)" in text
    assert "Video Q-Former from the BLIP-2 run" not in text  # no video-qformer-init cells: nothing to compare
