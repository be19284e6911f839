"""Saving and loading the learned weights of a ``VideoLanguageModel`` as one safetensors file.

Everything except the frozen encoders and the frozen LLM is saved, whatever is trainable in the
current stage (the stage-1 heads stay in a stage-2 checkpoint, so retrieval can still be evaluated).
The frozen parts are rebuilt from the config and identified by their weight hashes, written beside.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FROZEN_PREFIXES = ("vision.", "audio.", "bridge.llm.")
WEIGHTS = "model.safetensors"
FROZEN = "frozen.json"


def learned_state_dict(model) -> dict[str, torch.Tensor]:
    """The learned tensors by name; a tied tensor (the Q-Former's LM head and word embeddings) once."""
    out, seen = {}, set()
    for k, v in model.state_dict(keep_vars=True).items():
        if k.startswith(FROZEN_PREFIXES) or id(v) in seen:
            continue
        seen.add(id(v))
        out[k] = v.detach().cpu().contiguous()
    return out


def frozen_hashes(model) -> dict[str, str]:
    return {name: part.weight_hash() for name, part in (("vision", model.vision), ("audio", model.audio))
            if part is not None}


def save_learned(model, directory: str | Path) -> None:
    """Write ``model.safetensors`` and ``frozen.json`` into ``directory``."""
    directory = Path(directory)
    save_file(learned_state_dict(model), str(directory / WEIGHTS))
    (directory / FROZEN).write_text(json.dumps(frozen_hashes(model), indent=1))


def load_learned(model, directory: str | Path) -> None:
    """Load ``model.safetensors`` strictly (every learned tensor, nothing else) and check that the frozen
    encoders rebuilt from the config are the ones the weights were trained with."""
    directory = Path(directory)
    file = directory / WEIGHTS
    if not file.is_file():
        raise FileNotFoundError(f"no {WEIGHTS} in checkpoint {directory}")
    state = load_file(str(file))
    expected = learned_state_dict(model)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise KeyError(f"{file}: missing {missing[:10]}, unexpected {unexpected[:10]}")
    wrong = [k for k in state if state[k].shape != expected[k].shape]
    if wrong:
        raise ValueError(f"{file}: shapes differ for {wrong[:10]}")
    model.load_state_dict(state, strict=False)
    hashes_file = directory / FROZEN
    if hashes_file.is_file():
        saved, now = json.loads(hashes_file.read_text()), frozen_hashes(model)
        for name, digest in saved.items():
            if now.get(name) != digest:
                raise ValueError(f"{directory}: the frozen {name} encoder differs from the one these weights were "
                                 f"trained with (hash {now.get(name)} != {digest}); check model.{name} and "
                                 f"model.frozen_init_seed")
