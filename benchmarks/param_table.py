"""Trainable parameters and LLM tokens of every backend variant at BLIP-2 / Video-LLaMA size.

Built on the meta device (no memory, no weights), so it runs anywhere in seconds:

    python benchmarks/param_table.py [--out benchmarks/results/params.md]
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's videoqf, installed or not
from videoqf.backends import BACKENDS, backend_config, build_backend  # noqa: E402

# (label, backend, overrides of its full-size defaults, parameter groups a stage would freeze); every registered
# name appears at its defaults.
VARIANTS = [(name, name, {}, ()) for name in sorted(BACKENDS)] + [
    ("cascaded, no audio", "cascaded", {"audio": False}, ()),
    ("cascaded, frozen frame Q-Former (Video-LLaMA)", "cascaded", {}, ("frame_qformer",)),
    ("spatiotemporal, experts off", "spatiotemporal", {"experts": False}, ()),
    ("spatiotemporal, experts + pooling off", "spatiotemporal", {"experts": False, "attentive_pooling": False}, ()),
]


def count(module: torch.nn.Module, trainable: bool, frozen: set[int] = frozenset()) -> int:
    return sum(p.numel() for p in module.parameters() if (id(p) not in frozen) == trainable)


def rows() -> list[tuple[str, int, int, int, int, int]]:
    out = []
    for label, name, overrides, frozen_groups in VARIANTS:
        with torch.device("meta"):
            backend = build_backend(name, backend_config(name, overrides))
        groups = backend.parameter_groups()
        frozen = {id(p) for g in frozen_groups for m in groups[g] for p in m.parameters()}
        out.append((label, count(backend, True, frozen), count(backend, False, frozen),
                    count(backend.head, True, frozen),
                    backend.num_output_tokens(8, audio=True), backend.num_output_tokens(32, audio=True)))
    return out


def markdown(table) -> str:
    lines = [
        "## Backend parameters (BLIP-2 / Video-LLaMA size)",
        "",
        f"`python benchmarks/param_table.py` on {platform.machine()} ({platform.system()}), "
        f"{datetime.date.today().isoformat()}; built on torch's meta device, so counts only (no timing).",
        "Trainable / frozen: the backend's own parameters (the frozen image / audio encoders and the LLM are",
        "not in a backend). Head: the Q-Former whose queries give the tokens, text branch included (BERT's",
        "tied word embeddings / LM decoder counted once). Tokens: handed to the projector / LLM per clip,",
        "audio tokens included where the variant has an audio branch.",
        "",
        "| variant | trainable (M) | frozen (M) | head (M) | tokens T=8 | tokens T=32 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, trainable, frozen, head, t8, t32 in table:
        lines.append(f"| {label} | {trainable / 1e6:.1f} | {frozen / 1e6:.1f} | {head / 1e6:.1f} | {t8} | {t32} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "params.md")
    args = parser.parse_args()
    text = markdown(rows())
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
