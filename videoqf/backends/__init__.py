"""Interchangeable video backends: ``build_backend(name, config)``; ``BACKENDS`` lists the names.

Importing a backend module registers it; add a variant by adding its file and one import here.
"""
from videoqf.backends import cascaded, framewise, meanpool, pooled, spatiotemporal  # noqa: F401  (register themselves)
from videoqf.backends.base import VideoBackend, VideoTokens
from videoqf.backends.registry import BACKENDS, backend_config, build_backend, register_backend

__all__ = ["BACKENDS", "VideoBackend", "VideoTokens", "backend_config", "build_backend", "register_backend"]
