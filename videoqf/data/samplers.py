"""Frame samplers: which frames of a clip to decode.

A sampler maps a clip's length (``num_video_frames`` decodable frames at ``fps``) to the frame
indices to decode, so nothing else is ever decoded. Strategies follow the video-language literature:

- ``uniform``: the midpoint of each of ``num_frames`` equal segments (TSN-style test sampling).
- ``random_segment``: one random frame per equal segment (TSN training sampling, Wang et al. 2016).
- ``head_tail``: Video-LLaMA's training default (``sampling="headtail"`` in its ``load_video``):
  distinct random frames, half drawn from the first half of the clip and half from the second.
  For an odd count the head takes the extra frame (Video-LLaMA silently drops it).
- ``fps``: frames at a target rate, at most ``num_frames`` of them (a variable count, never padded).
- ``middle``: ``num_frames`` consecutive frames centred on the clip's middle.

Short clips, one rule everywhere: when the clip has fewer frames than a sampler asks for, every frame
is taken once, in order, and the list is padded by repeating the last index; the repeats are marked
``False`` in the mask. So ``len(indices) == num_frames`` for every sampler but ``fps``, indices are
sorted and in ``[0, num_video_frames)``, and ``mask[i]`` says whether frame ``i`` is a real sample.

Randomness comes only from the ``rng`` argument (an int seed, a ``numpy.random.Generator`` or None
for fresh entropy), so a seed gives the same indices on every call and in every DataLoader worker.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

RngLike = int | np.random.Generator | None


@dataclass(frozen=True)
class SampledFrames:
    """The frames a sampler chose.

    indices: [T] sorted absolute frame indices into the sampled range (repeats only as padding).
    mask: [T] True for a real sample, False for a repeat that pads a short clip.
    """

    indices: list[int]
    mask: list[bool]

    def __len__(self) -> int:
        return len(self.indices)


class FrameSampler(Protocol):
    num_frames: int

    def __call__(self, num_video_frames: int, fps: float, *, rng: RngLike = None) -> SampledFrames: ...


def _as_generator(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_length(num_video_frames: int) -> None:
    if num_video_frames < 1:
        raise ValueError(f"cannot sample frames from a clip with {num_video_frames} frames")


def _all_frames_padded(num_video_frames: int, num_frames: int) -> SampledFrames:
    """The short-clip rule: every frame once, then the last index repeated and masked False."""
    pad = num_frames - num_video_frames
    return SampledFrames(
        indices=list(range(num_video_frames)) + [num_video_frames - 1] * pad,
        mask=[True] * num_video_frames + [False] * pad,
    )


def _segment_bounds(num_video_frames: int, num_frames: int) -> np.ndarray:
    """[num_frames + 1] integer segment edges splitting [0, num_video_frames) as evenly as possible."""
    return np.linspace(0, num_video_frames, num_frames + 1).round().astype(int)


class _CountSampler:
    """Shared shape of the fixed-count samplers: validation and the short-clip rule live here."""

    def __init__(self, *, num_frames: int):
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.num_frames = num_frames

    def __call__(self, num_video_frames: int, fps: float, *, rng: RngLike = None) -> SampledFrames:
        _check_length(num_video_frames)
        if num_video_frames < self.num_frames:
            return _all_frames_padded(num_video_frames, self.num_frames)
        indices = sorted(int(i) for i in self._pick(num_video_frames, rng))
        return SampledFrames(indices=indices, mask=[True] * len(indices))

    def _pick(self, num_video_frames: int, rng: RngLike) -> list[int]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_frames={self.num_frames})"


class UniformSampler(_CountSampler):
    def _pick(self, num_video_frames, rng):
        edges = _segment_bounds(num_video_frames, self.num_frames)
        return list((edges[:-1] + edges[1:] - 1) // 2)


class RandomSegmentSampler(_CountSampler):
    def _pick(self, num_video_frames, rng):
        edges = _segment_bounds(num_video_frames, self.num_frames)
        # every segment is non-empty because num_video_frames >= num_frames
        return list(_as_generator(rng).integers(edges[:-1], edges[1:]))


class HeadTailSampler(_CountSampler):
    def _pick(self, num_video_frames, rng):
        gen = _as_generator(rng)
        split = (num_video_frames + 1) // 2
        n_head = (self.num_frames + 1) // 2
        head = gen.choice(split, size=n_head, replace=False)
        tail = split + gen.choice(num_video_frames - split, size=self.num_frames - n_head, replace=False)
        return list(head) + list(tail)


class MiddleSampler(_CountSampler):
    def _pick(self, num_video_frames, rng):
        first = (num_video_frames - self.num_frames) // 2
        return list(range(first, first + self.num_frames))


class FpsSampler:
    """Frames at ``target_fps`` (segment midpoints at that rate), at most ``num_frames`` of them.

    A clip of D seconds gives ``clamp(round(D * target_fps), 1, num_frames)`` frames, all real (mask
    all True, no padding); the count is also capped by the clip's own frame count.
    """

    def __init__(self, *, num_frames: int, target_fps: float = 1.0):
        if num_frames < 1 or target_fps <= 0:
            raise ValueError(f"need num_frames >= 1 and target_fps > 0, got {num_frames}, {target_fps}")
        self.num_frames = num_frames
        self.target_fps = target_fps

    def __call__(self, num_video_frames: int, fps: float, *, rng: RngLike = None) -> SampledFrames:
        _check_length(num_video_frames)
        if fps <= 0:
            raise ValueError(f"fps sampler needs the clip's frame rate, got fps={fps}")
        wanted = round(num_video_frames / fps * self.target_fps)
        count = max(1, min(wanted, self.num_frames, num_video_frames))
        return UniformSampler(num_frames=count)(num_video_frames, fps)

    def __repr__(self) -> str:
        return f"FpsSampler(num_frames={self.num_frames}, target_fps={self.target_fps})"


SAMPLERS: dict[str, Callable[..., FrameSampler]] = {
    "uniform": UniformSampler,
    "random_segment": RandomSegmentSampler,
    "head_tail": HeadTailSampler,
    "fps": FpsSampler,
    "middle": MiddleSampler,
}


def build_sampler(name: str, *, num_frames: int, **kwargs) -> FrameSampler:
    """Build a sampler by name (see ``SAMPLERS``); ``kwargs`` go to its constructor (``target_fps``)."""
    if name not in SAMPLERS:
        raise KeyError(f"unknown sampler {name!r}; known: {sorted(SAMPLERS)}")
    return SAMPLERS[name](num_frames=num_frames, **kwargs)

