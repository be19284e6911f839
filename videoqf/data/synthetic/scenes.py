"""Clip specifications of the synthetic world: events in order, their frame spans, and the caption.

A spec is a plain dict (it goes into the JSONL as metadata): each event has its own object (on its own grid
cell; shapes and colours are drawn independently, so a clip may show two squares) and its own span of
frames ``[start, stop)``, the spans tiling the clip in order along the sampler's segment edges. Within its
span an event is visible: "appears" and "turns" happen at the span's middle frame (``at``), "moves" slides one
grid cell linearly from the span's first to its last frame. An object is on screen during its own span (an
"appears" object from its ``at`` frame on); with ``"persistent": True`` (and in specs written before the key
existed) it stays to the end, and "moves"/"turns" objects are on screen from frame 0. With ``"returns": True``
(the persistent world's specs since world v5) an event is an excursion: after its span a mover is back on its
cell, a turned object back in its colour, and an object that appeared is gone, so no frame shows which events
are over and order can come from time only (with persistent objects kept to the end, a frame showing one object
already changed and another not yet tells the order by itself).
Positions are fractions of the frame size on a 3x3 grid, so the spec does not depend on resolution.

``object_states(spec, i)`` says what frame ``i`` shows; the renderer draws from it and tests use it
to check decoded pixels. ``reorder`` and ``resound`` derive the partner of an order pair / sound pair.
"""
from __future__ import annotations

import copy

import numpy as np

from videoqf.data.samplers import _segment_bounds
from videoqf.data.synthetic.vocab import ACTIONS, COLOURS, DIRECTIONS, SHAPES, SILENCE_PHRASE, SOUNDS

GRID = 3


def _cell_centre(col: int, row: int) -> list[float]:
    return [(col + 0.5) / GRID, (row + 0.5) / GRID]


def _spans(num_events: int, num_frames: int, segments: int, rng: np.random.Generator) -> list[list[int]]:
    """Consecutive spans made of whole segments (the sampler's, ``segments`` equal parts of the clip), as
    equal as the count allows; which positions get the longer spans is drawn per clip, so how many frames
    a sampler shows of an event says nothing about where it happens."""
    per_event = np.full(num_events, segments // num_events)
    per_event[rng.choice(num_events, segments % num_events, replace=False)] += 1
    edges = _segment_bounds(num_frames, segments)[np.cumsum(np.r_[0, per_event])]
    return [[int(a), int(b)] for a, b in zip(edges[:-1], edges[1:])]


def _retime(events: list[dict], spans: list[list[int]]) -> None:
    """Give events the spans in list order (and the instant of appear/turn events)."""
    for event, (start, stop) in zip(events, spans):
        event["frames"] = [start, stop]
        event["at"] = (start + stop) // 2


def sample_spec(rng: np.random.Generator, *, num_frames: int, segments: int, sound: str | None,
                persistent: bool = False) -> dict:
    """A random clip: 2-3 events whose objects sit on distinct grid cells, their spans whole segments of
    ``segments`` (``_spans``). ``persistent``: every object that moves or turns is on screen for the whole clip,
    back at rest after its event (``"returns"``), and one that appears from its appearance to its span's end;
    else each is seen during its own event only.

    Shapes are drawn independently, as colours are: with distinct shapes per clip the caption's earlier events
    would name the later shapes (the last one follows from the others), so a captioner trained with teacher
    forcing learns the shapes from the text and never looks (docs/decisions.md).
    """
    num_events = int(rng.integers(2, 4))
    shapes = rng.integers(len(SHAPES), size=num_events)
    free = {(c, r) for c in range(GRID) for r in range(GRID)}
    events = []
    for shape in shapes:
        action = ACTIONS[int(rng.integers(len(ACTIONS)))]
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        event = {"action": action, "shape": SHAPES[shape], "colour": colour}
        if action == "moves":
            moves = [
                (cell, d, (cell[0] + dx, cell[1] + dy))
                for cell in sorted(free)
                for d, (dx, dy) in DIRECTIONS.items()
                if (cell[0] + dx, cell[1] + dy) in free
            ]
            cell, direction, target = moves[int(rng.integers(len(moves)))]
            event.update(direction=direction, to=_cell_centre(*target))
            free.discard(target)
        else:
            cell = sorted(free)[int(rng.integers(len(free)))]
            if action == "turns":
                others = [c for c in COLOURS if c != colour]
                event["new_colour"] = others[int(rng.integers(len(others)))]
        event["from"] = _cell_centre(*cell)
        free.discard(cell)
        events.append(event)
    _retime(events, _spans(num_events, num_frames, segments, rng))
    return {"num_frames": num_frames, "events": events, "sound": sound, "persistent": persistent,
            "returns": persistent}


def describe(event: dict) -> str:
    subject = f"a {event['colour']} {event['shape']}"
    if event["action"] == "moves":
        return f"{subject} moves {event['direction']}"
    if event["action"] == "turns":
        return f"{subject} turns {event['new_colour']}"
    return f"{subject} appears"


def caption(spec: dict) -> str:
    """'a red square moves left, then a blue circle appears, while a low hum plays'."""
    sound = f"while a {spec['sound']} plays" if spec["sound"] else SILENCE_PHRASE
    return ", then ".join(describe(e) for e in spec["events"]) + f", {sound}"


def can_reorder(spec: dict) -> bool:
    """Whether some order of the clip's events changes its caption (not when every event reads alike)."""
    return len({describe(e) for e in spec["events"]}) > 1


def reorder(spec: dict, rng: np.random.Generator) -> dict:
    """Same objects, places, sound and spans; the events happen in an order that the caption tells apart.

    The spans stay where they were, so a partner shows as many frames at each place as its clip does."""
    out = copy.deepcopy(spec)
    said = [describe(e) for e in out["events"]]
    if not can_reorder(out):
        raise ValueError(f"every event of this clip reads {said[0]!r}: no order of them changes the caption")
    perm = rng.permutation(len(said))
    while [said[i] for i in perm] == said:
        perm = rng.permutation(len(said))
    spans = [e["frames"] for e in out["events"]]
    out["events"] = [out["events"][i] for i in perm]
    _retime(out["events"], spans)
    return out


def resound(spec: dict, rng: np.random.Generator) -> dict:
    """Same pictures; another sound."""
    out = copy.deepcopy(spec)
    others = [s for s in SOUNDS if s != spec["sound"]]
    out["sound"] = others[int(rng.integers(len(others)))]
    return out


def object_states(spec: dict, frame: int) -> list[dict]:
    """What frame ``frame`` shows: visible objects as {shape, colour, rgb, centre (x, y fractions)}."""
    states = []
    for event in spec["events"]:
        start, stop = event["frames"]
        at_rest = spec.get("returns", False) and frame >= stop  # an excursion over: an appeared object is gone
        if event["action"] == "appears" and (frame < event["at"] or at_rest):
            continue
        if not spec.get("persistent", True) and not start <= frame < stop:
            continue
        colour = event["colour"]
        if event["action"] == "turns" and frame >= event["at"] and not at_rest:
            colour = event["new_colour"]
        centre = event["from"]
        if event["action"] == "moves" and not at_rest:
            alpha = float(np.clip((frame - start) / max(1, stop - 1 - start), 0.0, 1.0))
            centre = [a + alpha * (b - a) for a, b in zip(event["from"], event["to"])]
        states.append({"shape": event["shape"], "colour": colour, "rgb": COLOURS[colour], "centre": centre})
    return states
