from dataclasses import dataclass, field

import pytest

from videoqf.config import ConfigError, load_config, to_yaml
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
