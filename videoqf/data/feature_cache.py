"""On-disk cache of frozen-encoder outputs: safetensors shards plus a JSON index, written crash-safely.

Layout of a cache directory::

    index.json               {"format_version", "spec": CacheSpec, "shards": {file: {key: [names]}}}
    shard-00000.safetensors  tensors named "<key>/<name>" (e.g. "<key>/vision")

A shard is complete on disk (temp file in the same directory, fsync, ``os.replace``) before the index
naming it is replaced the same way, so a killed writer leaves a valid cache of whole shards; reopening
it resumes and recomputes only keys not in the index. The spec records everything the features depend
on (encoders, weight hashes, sampler), and a reader or writer with another spec is refused.
Pattern after the sharded-checkpoint index of Hugging Face transformers (``model.safetensors.index.json``).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save
from videoqf.io import write_atomic

if TYPE_CHECKING:
    from videoqf.encoders.audio import FrozenAudioEncoder
    from videoqf.encoders.vision import FrozenVisionEncoder

INDEX_NAME = "index.json"
LOCK_NAME = ".writer.lock"
FORMAT_VERSION = 2


def file_identity(path: str | os.PathLike) -> list[int] | None:
    """[size, mtime in ns] of a file (None when it cannot be stat'ed): a file replaced under the same name
    gets another cache key, so its old features are never served for it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def cache_key(
    path: str | os.PathLike,
    window: tuple[float, float] | None,
    sampler_name: str,
    sampler_seed: int | None,
    num_frames: int,
) -> str:
    """Stable key of one clip: sha256 of (path as given, the file's size and mtime, window rounded to ms,
    sampler, seed, frames)."""
    window_ms = None if window is None else [round(float(w) * 1000) for w in window]
    fields_ = [os.fspath(path), file_identity(path), window_ms, sampler_name, sampler_seed, int(num_frames)]
    return hashlib.sha256(json.dumps(fields_).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CacheSpec:
    """What the cached features depend on; written in the index and compared field by field."""

    vision_encoder: str
    vision_weights_hash: str
    vision_block_index: int
    image_size: int | tuple[int, int]
    dtype: str
    sampler: str
    sampler_seed: int | None
    num_frames: int
    audio_encoder: str | None = None
    audio_weights_hash: str | None = None
    audio_segment_seconds: float | None = None
    audio_max_segments: int | None = None

    @classmethod
    def from_encoders(
        cls,
        vision: FrozenVisionEncoder,
        audio: FrozenAudioEncoder | None = None,
        *,
        sampler: str,
        sampler_seed: int | None,
        num_frames: int,
    ) -> CacheSpec:
        """Spec of features made by a ``FrozenVisionEncoder`` (and optionally a ``FrozenAudioEncoder``)."""
        return cls(
            vision_encoder=vision.config.model_name,
            vision_weights_hash=vision.weight_hash(),
            vision_block_index=vision.block_index,
            image_size=vision.data_config["image_size"],
            dtype=str(vision.dtype).removeprefix("torch."),
            sampler=sampler,
            sampler_seed=sampler_seed,
            num_frames=num_frames,
            audio_encoder=None if audio is None else audio.config.model_name,
            audio_weights_hash=None if audio is None else audio.weight_hash(),
            audio_segment_seconds=None if audio is None else audio.config.segment_seconds,
            audio_max_segments=None if audio is None else audio.config.max_segments,
        )

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists, as stored

    def differences(self, stored: dict) -> list[str]:
        """'field: cache has X, expected Y' for every field where ``stored`` (an index spec) differs."""
        mine = self.to_json()
        names = [f.name for f in fields(self)] + sorted(set(stored) - set(mine))
        return [
            f"{name}: cache has {stored.get(name)!r}, expected {mine.get(name)!r}"
            for name in names
            if stored.get(name) != mine.get(name)
        ]


class CacheSpecMismatch(ValueError):
    """A cache was made with other encoders, weights or sampler than the ones asked for."""


def _read_index(cache_dir: Path, spec: CacheSpec) -> dict:
    with open(cache_dir / INDEX_NAME) as f:
        index = json.load(f)
    if index.get("format_version") != FORMAT_VERSION:
        raise CacheSpecMismatch(
            f"feature cache {cache_dir}: format_version {index.get('format_version')!r}, "
            f"expected {FORMAT_VERSION}"
        )
    diffs = spec.differences(index["spec"])
    if diffs:
        raise CacheSpecMismatch(
            f"feature cache {cache_dir} was made with a different setup; " + "; ".join(diffs)
        )
    return index


class FeatureCacheWriter:
    """Appends clips' feature tensors to a cache directory, ``shard_size`` clips per shard.

    Reopening a directory with the same spec resumes: ``has(key)`` is true for every key already written.
    One writer per directory (enforced with a lock file). Use as a context manager, or call ``close()``:
    both flush the last partial shard (also when leaving on an exception: the clips added are complete).
    """

    def __init__(self, out_dir: str | os.PathLike, spec: CacheSpec, *, shard_size: int = 256):
        if shard_size < 1:
            raise ValueError(f"shard_size={shard_size}: must be >= 1")
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.spec = spec
        self.shard_size = shard_size
        self._lock = open(self.dir / LOCK_NAME, "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RuntimeError(f"another FeatureCacheWriter is writing to {self.dir}") from None
        if (self.dir / INDEX_NAME).exists():
            self._shards = _read_index(self.dir, spec)["shards"]
        else:
            self._shards = {}
        self._done = {key for entries in self._shards.values() for key in entries}
        self._pending: dict[str, dict[str, torch.Tensor]] = {}
        for stale in self.dir.glob(".*.tmp"):  # left by a killed writer; we hold the lock
            stale.unlink()

    def __len__(self) -> int:
        """Clips written or pending."""
        return len(self._done) + len(self._pending)

    def has(self, key: str) -> bool:
        return key in self._done or key in self._pending

    def add(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        """Queue one clip's tensors (e.g. ``{"vision": [T, N, D], "frame_mask": [T]}``); a full shard
        is written at once. Names must not contain "/"."""
        if self.has(key):
            raise ValueError(f"key {key} is already in feature cache {self.dir}")
        bad = [name for name in tensors if "/" in name]
        if bad or not tensors:
            raise ValueError(f"key {key}: tensor names must be non-empty and without '/', got {list(tensors)}")
        self._pending[key] = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write pending clips as one shard, then the index naming it."""
        if not self._pending:
            return
        # Numbered by committed shards: an orphan shard of a killed run (written, not indexed) is replaced.
        name = f"shard-{len(self._shards):05d}.safetensors"
        flat = {f"{key}/{tname}": t for key, ts in self._pending.items() for tname, t in ts.items()}
        write_atomic(self.dir / name, save(flat, metadata={"spec": json.dumps(self.spec.to_json())}))
        self._shards[name] = {key: list(ts) for key, ts in self._pending.items()}
        index = dict(format_version=FORMAT_VERSION, spec=self.spec.to_json(), shards=self._shards)
        write_atomic(self.dir / INDEX_NAME, json.dumps(index, indent=1).encode())
        self._done.update(self._pending)
        self._pending = {}

    def close(self) -> None:
        if self._lock.closed:
            return
        self.flush()
        self._lock.close()

    def __enter__(self) -> "FeatureCacheWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FeatureCache:
    """Reads a cache written by ``FeatureCacheWriter``; refuses one made with another spec.

    Shards are opened lazily with ``safe_open`` (memory-mapped) in each process, so the reader can be
    handed to DataLoader workers.
    """

    def __init__(self, cache_dir: str | os.PathLike, expected_spec: CacheSpec):
        self.dir = Path(cache_dir)
        if not (self.dir / INDEX_NAME).is_file():
            raise FileNotFoundError(f"no feature cache at {self.dir}: {INDEX_NAME} is missing")
        index = _read_index(self.dir, expected_spec)
        self.spec = expected_spec
        self._entries = {
            key: (shard, names) for shard, entries in index["shards"].items() for key, names in entries.items()
        }
        self._handles: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def keys(self) -> list[str]:
        return list(self._entries)

    def get(self, key: str) -> dict[str, torch.Tensor]:
        """The tensors stored for ``key``, by name."""
        if key not in self._entries:
            raise KeyError(f"key {key} is not in feature cache {self.dir}")
        shard, names = self._entries[key]
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.dir / shard), framework="pt")
        return {name: self._handles[shard].get_tensor(f"{key}/{name}") for name in names}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}  # file handles do not cross process boundaries
