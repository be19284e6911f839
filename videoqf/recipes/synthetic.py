"""The embedded default's ingredients, made on the spot and kept in a cache directory.

``prepare_synthetic`` writes the synthetic diagnostic world (videos, annotations, pairs, tokenizer);
``prepare_caption_lm`` pre-trains the tiny causal LM that stage 2 keeps frozen. Both are skipped when
their output is already complete (a marker file is written last), so a second run starts training at once.
"""
from __future__ import annotations

import os
from pathlib import Path

from videoqf.io import file_lock
from videoqf.data.synthetic import SyntheticConfig, generate, load_tokenizer
from videoqf.data.synthetic.generate import WORLD_VERSION
from videoqf.llm.config import CaptionLMConfig
from videoqf.llm.pretrain import pretrain_caption_lm, read_captions

DONE = ".complete"


def cache_root() -> Path:
    """``$VIDEOQF_CACHE``, else ``~/.cache/videoqf``."""
    return Path(os.environ.get("VIDEOQF_CACHE", Path.home() / ".cache" / "videoqf"))


def synthetic_dir(config: SyntheticConfig) -> Path:
    """Where the cache keeps the embedded world of ``config`` (its clip count, seed and kind of objects)."""
    kind = "-persistent" if config.persistent_objects else ""
    return cache_root() / f"synthetic-v{WORLD_VERSION}-{config.num}-seed{config.seed}{kind}"


def prepare_synthetic(out_dir: Path, config: SyntheticConfig) -> Path:
    """The synthetic set in ``out_dir`` (generated when missing or incomplete)."""
    out_dir = Path(out_dir)
    with file_lock(out_dir.with_name(out_dir.name + ".lock")):
        if not (out_dir / DONE).exists():
            print(f"making the synthetic world ({config.num} clips) in {out_dir} ...", flush=True)
            generate(str(out_dir), config, progress=True)
            (out_dir / DONE).write_text("ok\n")
    return out_dir


def prepare_caption_lm(data_dir: Path, out_dir: Path, config: CaptionLMConfig) -> Path:
    """A tiny GPT-2 pre-trained on the training captions, saved with ``save_pretrained`` in ``out_dir``."""
    out_dir = Path(out_dir)
    with file_lock(out_dir.with_name(out_dir.name + ".lock")):
        if not (out_dir / DONE).exists():
            print(f"pre-training the caption LM ({config.steps} steps) into {out_dir} ...", flush=True)
            captions = read_captions([str(Path(data_dir) / "train.jsonl")])
            pretrain_caption_lm(captions, load_tokenizer(str(data_dir)), config, out_dir=str(out_dir), progress=True)
            (out_dir / DONE).write_text("ok\n")
    return out_dir
