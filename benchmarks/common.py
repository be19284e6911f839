"""Helpers shared by the benchmarks: machine description and result files (timing: ``videoqf.measure``)."""
from __future__ import annotations

import argparse
import datetime as _dt
import platform
import sys
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).parent / "results"


def machine() -> str:
    """One line naming the processor, core count and torch build (and the GPU when there is one)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"Python {platform.python_version()}{gpu}")


def matmul_flops(n: int = 2048, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 repeats: int = 5, sync=None) -> float:
    """FLOP/s of one n x n matrix product (median of ``repeats``): how fast the machine is at this moment."""
    from videoqf.measure import interleaved_medians

    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return 2 * n**3 / interleaved_medians({"mm": lambda: a @ b}, repeats=repeats, sync=sync or (lambda: None))["mm"]


def variant_bench_args(doc: str, *, repeats: int) -> argparse.ArgumentParser:
    """The options of a benchmark over the embedded default's variants (its own are added to the parser)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="cascaded,spatiotemporal")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--note", default="", help="a line on the machine's state (e.g. other jobs running)")
    ap.add_argument("--no-write", action="store_true", help="print the table without writing results/")
    return ap


def embedded_model(variant: str, stage: str):
    """(config, model) of the embedded default's ``variant``, with the parameters of ``stage`` trainable (its world,
    caption LM and feature cache are made in $VIDEOQF_CACHE when missing)."""
    from videoqf.llm.tokenizer import load_tokenizer
    from videoqf.models.groups import lock
    from videoqf.models.video_lm import VideoLanguageModel
    from videoqf.recipes.synthetic import CONFIGS, embedded_experiment

    cfg = embedded_experiment(CONFIGS / "variants" / f"{variant}.yaml", [])
    model = VideoLanguageModel(cfg.model, load_tokenizer(cfg.model.tokenizer))
    lock(model, cfg.stages[stage].train, cfg.stages[stage].freeze, where=f"stages.{stage}")
    return cfg, model


def write_result(name: str, title: str, body: str) -> Path:
    """Write ``results/<name>.md`` with the command, machine and date, and return its path."""
    RESULTS_DIR.mkdir(exist_ok=True)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix().split("/videoqf/")[-1]] + sys.argv[1:])
    text = (f"## {title}\n\n- command: `{command}`\n- machine: {machine()}\n"
            f"- date: {_dt.date.today().isoformat()}\n\n{body.strip()}\n")
    out = RESULTS_DIR / f"{name}.md"
    out.write_text(text)
    assemble()
    return out


ORDER = ["qformer_vs_hf", "stage1_step", "decode", "cache", "params", "encoder_probe", "default_run", "sweep", "load_memory"]


def assemble() -> Path:
    """Rebuild ``benchmarks/RESULTS.md`` from every section in ``results/`` (known ones first)."""
    sections = sorted(RESULTS_DIR.glob("*.md"), key=lambda p: (ORDER.index(p.stem.split("-")[0])
                                                                if p.stem.split("-")[0] in ORDER else len(ORDER), p.stem))
    body = "\n\n".join(p.read_text().strip() for p in sections)
    out = RESULTS_DIR.parent / "RESULTS.md"
    out.write_text("# Benchmark results\n\nEach section was written by the command it names, on the machine it "
                   "names; ratios were measured side by side in one run. Rebuild this file with "
                   "`python benchmarks/common.py`.\n\n" + body + "\n")
    return out


if __name__ == "__main__":
    print(assemble())
