"""A video model started from an image model: which tensors it takes from the image checkpoint, which are new.

The source is an image model (its head is the image Q-Former: a ``framewise`` / ``meanpool`` model, as a
transformers Blip2 / InstructBlip folder loads, or as the ``blip2`` recipe trains here). Per target variant:

    framewise / meanpool  head, ln_vision, retrieval heads, projector: the checkpoint's (InstructBLIP-Video is
                          BLIP-2's Q-Former per frame, so nothing is new)
    cascaded              frame Q-Former (query path and queries) + ln_vision: the checkpoint's; frame position
                          embedding, video Q-Former (the head, its own queries), audio branch, retrieval heads and
                          projection: new (Video-LLaMA, Zhang et al., 2023)
    spatiotemporal        head attention, queries, text side and ln_vision: the checkpoint's; every query FFN
                          expert (SP / T / SM) a copy of the checkpoint's query FFN; attentive pooling's last
                          Linear zero. With ``exact_on_static_clips`` (``load_pretrained(..., variant=...)``) the
                          temporal position table is zero too, so on a static video the head reads T copies of one
                          frame's tokens, weighted alike, and its queries are the image model's (with
                          ``tokens_per_frame`` 0: patches pooled over space are not the tokens it was trained on).
                          A training run (``model.init_from``) keeps the new table's N(0, 1) draw instead, as from
                          scratch: from a zero table the head learnt order slowly (docs/decisions.md)
    pooled                ln_vision only (Video-ChatGPT keeps no Q-Former; its pooled tokens, head and Linear are new)

The frozen encoders' standardisers (``model.standardize_features``) are the checkpoint's wherever it has one of
the same shape. A tensor copied is named with its source in ``InitReport``; every other learned tensor is new.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from videoqf.backends.frames import FrameHeadBackend
from videoqf.models.io import learned_state_dict

IMAGE_VARIANTS = ("framewise", "meanpool")
REPORT_FILE = "init_from.json"
# parts a source may lack (an image model without audio, or without standardisers): the target's then start fresh
OPTIONAL = ("vision_norm.", "audio_norm.", "bridge.projector.")


class InitError(ValueError):
    """The source is no image model, or its tensors do not fit the video model built for it."""


@dataclass
class InitReport:
    """source: the checkpoint's path; copied: target tensor name -> source tensor name; new: learned tensors of
    the target that start fresh; unused: source tensors the target has no place for."""

    source: str
    variant: str
    copied: dict[str, str] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line per top-level part: what it took from the checkpoint, what is new."""
        def parts(names):
            return sorted({_part(n) for n in names})

        return "\n".join([f"init from {self.source} ({self.variant}):",
                          f"  copied ({len(self.copied)} tensors): {', '.join(parts(self.copied))}",
                          f"  new ({len(self.new)} tensors): {', '.join(parts(self.new)) or '-'}",
                          f"  not used ({len(self.unused)} tensors): {', '.join(parts(self.unused)) or '-'}"])

    def write(self, directory) -> None:
        (directory / REPORT_FILE).write_text(json.dumps(asdict(self), indent=1))


def _part(name: str) -> str:
    """``backend.head.layers.0.ffn...`` -> ``backend.head``; ``vision_norm.mean`` -> ``vision_norm``: for the summary."""
    return ".".join(name.split(".")[:2 if name.startswith(("backend.", "bridge.", "retrieval_heads.")) else 1])


def _spatiotemporal_rename(name: str, query_experts: list[str]) -> str:
    """Every query expert reads the image Q-Former's query FFN (the text's own FFN, where routed apart, is kept)."""
    match = re.search(r"\.ffn\.experts\.([^.]+)\.", name)
    if match is None or match.group(1) not in query_experts:
        return name
    return name.replace(f".ffn.experts.{match.group(1)}.", ".ffn.experts.query.")


def _plan(variant: str) -> dict[str, str]:
    """Target prefix -> source prefix of the parts copied whole (inside the spatiotemporal head, experts renamed)."""
    plan = {"backend.ln_vision.": "backend.ln_vision.", "vision_norm.": "vision_norm.", "audio_norm.": "audio_norm."}
    if variant in (*IMAGE_VARIANTS, "spatiotemporal"):
        plan.update({"backend.head.": "backend.head.", "retrieval_heads.": "retrieval_heads.",
                     "bridge.projector.": "bridge.projector.", "llm_head.": "backend.head."})
    elif variant == "cascaded":
        plan["backend.frame_qformer."] = "backend.head."
    elif variant != "pooled":
        raise InitError(f"model.init_from: no initialisation from an image model is defined for {variant!r}")
    return plan


def _source_name(target, name: str, prefix: str, source_prefix: str) -> str:
    inner = name[len(prefix):]
    if target.config.variant == "spatiotemporal" and prefix in ("backend.head.", "llm_head."):
        inner = _spatiotemporal_rename(inner, [e for e, _ in target.backend.head.config.query_routes])
    return source_prefix + inner


def check_image_model(source) -> None:
    if not isinstance(source.backend, FrameHeadBackend):
        raise InitError(f"model.init_from must be an image model (its head the image Q-Former: {IMAGE_VARIANTS}); "
                        f"this checkpoint is a {source.config.variant!r} model")


@torch.no_grad()
def init_from_image(target, source, *, source_path: str = "", exact_on_static_clips: bool = True) -> InitReport:
    """Copy into ``target`` (a ``VideoLanguageModel``) what its variant takes from the image model ``source``;
    set what must start at a given value (spatiotemporal: zero pooling scores, and with ``exact_on_static_clips``
    a zero temporal table). Returns the report of what was copied and what is new. A tensor the plan names that is
    missing or shaped otherwise in the source is an error naming both."""
    check_image_model(source)
    plan = _plan(target.config.variant)
    wanted = learned_state_dict(target)
    have = dict(source.state_dict(keep_vars=True))
    report = InitReport(source=str(source_path), variant=target.config.variant)
    values, wrong = {}, []
    for name in wanted:
        prefix = next((p for p in plan if name.startswith(p)), None)
        if prefix is None:
            report.new.append(name)
            continue
        src = _source_name(target, name, prefix, plan[prefix])
        if src not in have:
            if prefix in OPTIONAL:
                report.new.append(name)
                continue
            wrong.append(f"{name} <- {src} (missing)")
        elif have[src].shape != wanted[name].shape:
            if prefix == "bridge.projector.":  # another kind or width of projection: it starts fresh
                report.new.append(name)
                continue
            wrong.append(f"{name} {tuple(wanted[name].shape)} <- {src} {tuple(have[src].shape)}")
        else:
            values[name] = have[src].detach()
            report.copied[name] = src
    if wrong:
        raise InitError(f"model.init_from={source_path}: the {target.config.variant} model does not fit the image "
                        f"checkpoint (make its Q-Former sizes the checkpoint's): {wrong[:10]}")
    target.load_state_dict(values, strict=False)
    if target.config.variant == "spatiotemporal":
        _start_as_image_model(target.backend, zero_table=exact_on_static_clips)
    used = set(report.copied.values())
    report.unused = sorted(n for n in learned_state_dict(source) if n not in used)
    return report


def _start_as_image_model(backend: nn.Module, *, zero_table: bool) -> None:
    """Uniform segment weights (scale 1 on every token) and, with ``zero_table``, no temporal offset: a static clip
    then reads as its frame."""
    if backend.pooling is not None:
        nn.init.zeros_(backend.pooling.score[-1].weight)
    if zero_table and backend.frame_position is not None:
        nn.init.zeros_(backend.frame_position.table)
