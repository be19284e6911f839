"""Safe, strict loading of frozen-encoder weights from local files, and a content hash of the weights.

Checkpoints are read with timm's loader (safetensors, or ``torch.load(weights_only=True)``; it also unwraps
``state_dict`` / ``model`` containers and ``module.`` prefixes). Nothing is fetched from the network.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from timm.models import load_state_dict
from torch import nn

WEIGHT_FILE_NAMES = ("model.safetensors", "pytorch_model.bin")
_MAX_LISTED_KEYS = 20


def resolve_weights_file(path: str | Path) -> Path:
    """Return the weight file that ``path`` names.

    path: a weight file; a directory holding one of ``WEIGHT_FILE_NAMES``; or a Hugging Face cache repo
        folder (``models--org--name``) whose ``refs/main`` names the snapshot to use.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"encoder weight path does not exist: {path}")
    folder = path
    ref = path / "refs" / "main"
    if ref.is_file():
        folder = path / "snapshots" / ref.read_text().strip()
    for name in WEIGHT_FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no weight file in {folder}: looked for {', '.join(WEIGHT_FILE_NAMES)}")


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = len(keys) - _MAX_LISTED_KEYS
    return shown + (f" ... and {more} more" if more > 0 else "")


def load_weights_strict(model: nn.Module, path: str | Path, *, drop_keys: tuple[str, ...] = ()) -> Path:
    """Load a local checkpoint into ``model``; any missing or unexpected key is an error listing the keys.

    drop_keys: key prefixes deliberately discarded first (e.g. a classifier ``head.``).
    Returns the resolved weight file.
    """
    file = resolve_weights_file(path)
    state = load_state_dict(str(file), use_ema=False, weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(tuple(drop_keys))}
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing keys ({len(missing)}): {_listed(missing)}")
        if unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {_listed(unexpected)}")
        raise ValueError(f"weights {file} do not match {type(model).__name__}: " + "; ".join(problems))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"weights {file} do not fit {type(model).__name__}: {err}") from err
    return file


def state_dict_hash(module: nn.Module) -> str:
    """sha256 over every state-dict entry's name, shape and fp32 values (independent of device and of
    bf16/fp32 storage of the same values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        values = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(values.shape)};".encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()
