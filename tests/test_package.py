from _env import fresh_env

import videoqf


def test_version_is_set():
    assert videoqf.__version__.count(".") == 2


def test_non_editable_install_can_train(tmp_path):
    """``pip install .`` (not editable) ships configs/ as package data: the installed package finds its DeepSpeed
    templates and trains, run from outside the checkout."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    src, site = tmp_path / "src", tmp_path / "site"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(root / name, src / name)
    for name in ("videoqf", "configs"):
        shutil.copytree(root / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(src)], check=True, capture_output=True)
    assert (site / "videoqf" / "configs" / "deepspeed" / "zero2.json").is_file()
    script = """
import torch
from torch import nn
import videoqf.train.engine as engine
from videoqf.train.config import TrainConfig
from videoqf.train.loop import Trainer

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)
    def forward(self, batch):
        return {"loss": ((self.lin(batch["x"]) - batch["y"]) ** 2).mean()}

data = [{"x": torch.randn(4), "y": torch.randn(1)} for _ in range(8)]
trainer = Trainer(Model(), data, None, TrainConfig(max_steps=2, micro_batch_size=4, zero_stage=2, progress_bar=False),
                  output_dir="run")
trainer.fit()
print(engine.__file__, engine.TEMPLATE_DIR, trainer.step)
"""
    env = {**fresh_env(), "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    module, templates, steps = out.stdout.split()[-3:]
    assert module.startswith(str(site)) and templates == str(site / "videoqf" / "configs" / "deepspeed")
    assert steps == "2"
