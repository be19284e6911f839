import os
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from videoqf.config import ConfigError, load_config, to_yaml
from videoqf.experiment import load_experiment
from videoqf.qformer import QFormerConfig


@dataclass
class Train:
    lr: float = 1e-4
    steps: int = 10
    name: str = "run"


@dataclass
class Schema:
    model: QFormerConfig = field(default_factory=QFormerConfig)
    train: Train = field(default_factory=Train)


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  hidden_size: 64\n  num_heads: 4\ntrain:\n  lr: 0.5\n")
    cfg = load_config(Schema, f, ["train.steps=3", "model.query_group_sizes=[16,16]",
                                  "model.query_experts=[a,b]"])
    assert isinstance(cfg.model, QFormerConfig) and cfg.model.hidden_size == 64
    assert cfg.train.lr == 0.5 and cfg.train.steps == 3
    assert cfg.model.query_routes == [("a", 16), ("b", 16)]
    again = tmp_path / "again.yaml"
    again.write_text(to_yaml(cfg))
    assert load_config(Schema, again) == cfg


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="train.stepz"):
        load_config(Schema, None, ["train.stepz=3"])
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  hidden_sise: 64\n")
    with pytest.raises(ConfigError, match="hidden_sise"):
        load_config(Schema, f)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="train.steps"):
        load_config(Schema, None, ["train.steps=many"])


def test_schema_checks_run():
    with pytest.raises(ConfigError, match="multiple of num_heads"):
        load_config(Schema, None, ["model.hidden_size=65"])


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="not found"):
        load_config(Schema, "nope.yaml")
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(Schema, None, ["train.steps"])


TYPOS = {  # one mistyped key per section of the embedded default: each names itself
    "model.use_audi=false": "model.use_audi",
    "model.backend.frame_qformer.num_querys=3": "model.backend.frame_qformer.num_querys",
    "model.backend.tempral_pe=false": "model.backend.tempral_pe",
    "model.llm.own_hed=true": "model.llm.own_hed",
    "data.num_frame=4": "data.num_frame",
    "eval.rerank=4": "eval.rerank",
    "train.lr_warmup=3": "train.lr_warmup",
    "stages.stage1.step=3": "stages.stage1.step",
    "stages.stage2.train=[projecter]": "projecter",
    "run_stages=[stage3]": "stage3",
}


@pytest.mark.parametrize("override", TYPOS)
def test_a_typo_in_any_section_names_the_key(override):
    with pytest.raises(ConfigError, match=TYPOS[override].replace(".", r"\.").replace("[", r"\[")):
        load_experiment(["configs/synthetic.yaml", "configs/variants/cascaded.yaml"],
                        ["model.llm.arch=causal", "model.llm.path=unused", override])


def test_a_head_without_text_side_is_refused_where_a_stage_reads_text():
    files = ["configs/synthetic.yaml", "configs/variants/cascaded.yaml"]
    off = ["model.llm.arch=causal", "model.llm.path=unused", "model.backend.video_qformer.text_branch=false"]
    with pytest.raises(ConfigError, match="stages.stage1: the head Q-Former reads text"):
        load_experiment(files, off)
    cfg = load_experiment(files, [*off, "run_stages=[stage2]"])  # captioning alone reads no text in the head
    assert cfg.selected_stages == ["stage2"]


def test_the_main_command_stops_on_a_typo_before_making_anything(tmp_path):
    env = {**os.environ, "VIDEOQF_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "tools/train_video.py", "--variant", "cascaded",
                          "model.backend.video_qformer.num_layer=3"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "model.backend.video_qformer.num_layer" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "cache").exists()  # no world, caption LM or features were made
