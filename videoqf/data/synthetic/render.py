"""Pixels and sound of a synthetic clip spec (see ``scenes.py``).

frames: uint8 [T, size, size, 3]; audio: float32 [num_samples] mono in [-1, 1].
Shapes are big (radius 0.14 of the frame) and flat-coloured so one patch of a ViT sees one colour.
"""
from __future__ import annotations

import numpy as np

from videoqf.data.synthetic.scenes import object_states
from videoqf.data.synthetic.vocab import BACKGROUND, SOUNDS

RADIUS = 0.14  # fraction of the frame size


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "triangle":  # apex up, base at the bottom
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    raise ValueError(f"unknown shape {shape!r}")


def render_frames(spec: dict, size: int) -> np.ndarray:
    """uint8 [T, size, size, 3] frames of the spec."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    frames = np.empty((spec["num_frames"], size, size, 3), dtype=np.uint8)
    for t in range(spec["num_frames"]):
        frame = frames[t]
        frame[:] = BACKGROUND
        for obj in object_states(spec, t):
            cx, cy = obj["centre"][0] * size, obj["centre"][1] * size
            frame[_shape_mask(obj["shape"], xs - cx, ys - cy, RADIUS * size)] = obj["rgb"]
    return frames


def render_audio(sound: str, *, duration: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [round(duration * sample_rate)] waveform of a named sound for the whole clip."""
    kind, freq = SOUNDS[sound]
    t = np.arange(round(duration * sample_rate)) / sample_rate
    if kind == "tone":
        wave = 0.4 * np.sin(2 * np.pi * freq * t)
    elif kind == "beeps":  # 1500 Hz on for 0.15 s every 0.3 s
        wave = 0.4 * np.sin(2 * np.pi * freq * t) * ((t % 0.3) < 0.15)
    else:  # white noise in two bursts per second
        wave = 0.3 * rng.standard_normal(t.shape) * ((t % 0.5) < 0.25)
    return wave.astype(np.float32)
