"""The side-by-side benchmarks run end to end at their tiny sizes (``--quick``), so a change to the model's
interfaces cannot leave a benchmark broken until its next full run."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import qformer_vs_hf, stage1_step  # noqa: E402


def table_rows(table: str, first_cells: tuple[str, ...]) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().startswith(first_cells)]


def test_stage1_step_times_both_sides_in_both_precisions():
    table = stage1_step.main(["--quick", "--no-write", "--repeats", "1", "--batch", "4", "--text-len", "8"])
    rows = table_rows(table, ("fp32", "bf16"))
    assert [r[0] for r in rows] == ["fp32", "bf16 autocast"]
    assert all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)


def test_qformer_vs_hf_matches_transformers_and_times_both():
    table = qformer_vs_hf.main(["--quick", "--no-write", "--repeats", "1"])
    difference = float(table.split("max |ours - hf| = ")[1].split()[0])
    assert difference < 1e-4
    rows = table_rows(table, ("forward",))
    assert [r[0] for r in rows] == ["forward (ms, median of 1)", "forward+backward (ms)"]
    assert all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)
