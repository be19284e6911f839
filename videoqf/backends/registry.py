"""The backend registry: ``@register_backend(name, config=Cls)`` on a small builder function (timm-style).

Adding a variant is one new file holding its config dataclass, its module and a registered builder,
plus one import line in ``videoqf/backends/__init__.py``; the tests iterate over ``BACKENDS``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from videoqf.backends.base import VideoBackend
from videoqf.backends.presets import size_preset


@dataclass(frozen=True)
class BackendEntry:
    """A registered builder and its config dataclass (whose ``preset(SizePreset)`` gives the small sizes)."""

    builder: Callable[[Any], VideoBackend]
    config_class: type


BACKENDS: dict[str, BackendEntry] = {}


def register_backend(name: str, *, config: type):
    """Decorator: register ``builder(config) -> VideoBackend`` under ``name``."""

    def wrap(builder: Callable[[Any], VideoBackend]):
        if name in BACKENDS:
            raise ValueError(f"backend {name!r} is registered twice")
        BACKENDS[name] = BackendEntry(builder=builder, config_class=config)
        return builder

    return wrap


def _entry(name: str) -> BackendEntry:
    if name not in BACKENDS:
        raise KeyError(f"unknown backend {name!r}; registered: {sorted(BACKENDS)}")
    return BACKENDS[name]


def backend_config(name: str, overrides: Mapping | DictConfig | None = None, *, preset: str = "default"):
    """The config dataclass of ``name`` (``preset``: "default" full size, or a name in ``PRESETS``), with ``overrides``
    (nested keys, e.g. from YAML) merged in; an unknown or mistyped key is an error (OmegaConf)."""
    cls = _entry(name).config_class
    base = cls() if preset == "default" else cls.preset(size_preset(preset))
    if not overrides:
        return base
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(base), overrides))


def build_backend(name: str, config=None) -> VideoBackend:
    """Build backend ``name`` from its config dataclass, a mapping of overrides of its defaults, or None."""
    entry = _entry(name)
    if config is None or isinstance(config, (Mapping, DictConfig)):
        config = backend_config(name, config)
    elif not isinstance(config, entry.config_class):
        raise TypeError(f"backend {name!r} takes a {entry.config_class.__name__}, got {type(config).__name__}")
    return entry.builder(config)
