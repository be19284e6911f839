"""Typed configuration: dataclass schemas, YAML files and ``key.sub=value`` overrides (OmegaConf).

Every part of videoqf declares its settings as a dataclass; a run's configuration is the schema's
defaults, then a YAML file, then command-line overrides, each checked against the schema. An unknown
key or a value of the wrong type is an error that names the key; nothing is silently ignored.
"""
from __future__ import annotations

from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value that does not fit the schema (the message names the key and the source)."""


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or getattr(err, "key", None)
        reason = str(err).splitlines()[0]
        raise ConfigError(f"{source}: bad key {key!r}: {reason}") from None


def load_config(schema: type[T], path: str | Path | Sequence[str | Path] | None = None,
                overrides: Sequence[str] = ()) -> T:
    """Build a ``schema`` instance from its defaults, YAML file(s) and ``key.sub=value`` overrides.

    Later sources win (files in the order given, then the overrides). Values in overrides are parsed as YAML (``train.lr=1e-4``, ``data.audio=false``,
    ``model.groups=[8,8,16]``).
    """
    if not is_dataclass(schema):
        raise TypeError(f"{schema!r} is not a dataclass schema")
    cfg = OmegaConf.structured(schema)
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    for file in map(Path, paths):
        if not file.is_file():
            raise ConfigError(f"config file not found: {file}")
        cfg = _merge(cfg, OmegaConf.load(file), str(file))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"override {item!r}")
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"incomplete configuration: {err}") from None
    except (ValueError, TypeError) as err:  # a schema's own __post_init__ check
        raise ConfigError(str(err)) from None


def to_yaml(config: Any) -> str:
    """The configuration as YAML (saved beside checkpoints so a run directory is self-contained)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))
