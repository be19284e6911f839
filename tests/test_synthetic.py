"""The synthetic world: captions, pairs, silent clips, determinism, tokenizer, CLI."""
import json
import os

import av
import numpy as np
import pytest

from tools.make_synthetic import parse_args
from videoqf.data.synthetic import SyntheticConfig, caption, generate, load_tokenizer, object_states, render_frames
from videoqf.data.samplers import build_sampler
from videoqf.data.synthetic.scenes import can_reorder, describe, reorder, resound, sample_spec
from videoqf.data.synthetic.vocab import BACKGROUND, COLOURS, SHAPES, SILENCE_PHRASE, SOUNDS


def _all(records):
    return [r for recs in records.values() for r in recs]


def test_layout_and_split_sizes(synthetic_dir, synthetic_records):
    assert {len(v) for v in synthetic_records.values()} and sum(len(v) for v in synthetic_records.values()) == 12
    assert len(synthetic_records["test"]) == 4 and len(synthetic_records["val"]) == 2
    for record in _all(synthetic_records):
        assert os.path.isfile(os.path.join(synthetic_dir, record["video"]))
    ids = [r["id"] for r in _all(synthetic_records)]
    assert len(set(ids)) == len(ids)


def test_events_tile_the_clip_in_order(synthetic_records):
    for record in _all(synthetic_records):
        events = record["spec"]["events"]
        assert 2 <= len(events) <= 3
        assert events[0]["frames"][0] == 0 and events[-1]["frames"][1] == record["num_frames"]
        for a, b in zip(events, events[1:]):
            assert a["frames"][1] == b["frames"][0]
        assert len({tuple(e["from"]) for e in events}) == len(events)  # one grid cell each
        assert record["caption"].startswith(", then ".join(describe(e) for e in events))


def test_captions_name_the_sound_or_silence_and_files_agree(synthetic_dir, synthetic_records):
    for record in _all(synthetic_records):
        with av.open(os.path.join(synthetic_dir, record["video"])) as container:
            has_track = bool(container.streams.audio)
            codec = container.streams.video[0].codec_context.name
        assert codec in ("h264", "mpeg4")
        assert has_track == record["has_audio"]
        sound = record["spec"]["sound"]
        if has_track:
            assert record["caption"].endswith(f"while a {sound} plays") and sound in SOUNDS
        else:
            assert record["caption"].endswith(SILENCE_PHRASE) and sound is None


def test_pairs_differ_only_in_order_or_sound(synthetic_dir, synthetic_records):
    by_id = {r["id"]: r for r in _all(synthetic_records)}
    pairs = json.load(open(os.path.join(synthetic_dir, "pairs.json")))
    test_ids = {r["id"] for r in synthetic_records["test"]}
    listed = [tuple(p) for kind in ("order", "sound") for p in pairs[kind]]
    assert listed and all(a in test_ids and b in test_ids for a, b in listed)
    for record in by_id.values():
        if not record["pair"]:
            continue
        other = by_id[record["pair"]["partner"]]
        assert other["pair"] == {"kind": record["pair"]["kind"], "partner": record["id"]}
        mine, theirs = record["caption"].split(", then "), other["caption"].split(", then ")
        assert record["caption"] != other["caption"]
        if record["pair"]["kind"] == "order":
            assert record["spec"]["sound"] == other["spec"]["sound"]
            assert sorted(map(describe, record["spec"]["events"])) == sorted(map(describe, other["spec"]["events"]))
        else:
            assert record["spec"]["sound"] != other["spec"]["sound"] and None not in (record["spec"]["sound"], other["spec"]["sound"])
            assert mine[:-1] == theirs[:-1]
            assert np.array_equal(render_frames(record["spec"], 32), render_frames(other["spec"], 32))


def test_reorder_and_resound_properties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        spec = sample_spec(rng, num_frames=24, segments=8, sound="low hum")
        if len({describe(e) for e in spec["events"]}) < 2:
            with pytest.raises(ValueError, match="no order"):
                reorder(spec, rng)
            continue
        flipped = reorder(spec, rng)
        assert sorted(map(describe, flipped["events"])) == sorted(map(describe, spec["events"]))
        assert caption(flipped) != caption(spec)
        assert resound(spec, rng)["sound"] in set(SOUNDS) - {"low hum"}
    twins = {"num_frames": 24, "sound": None, "events": [
        {"action": "appears", "shape": "square", "colour": "red", "from": [c, 0.5], "frames": [0, 12], "at": 6}
        for c in (1 / 6, 5 / 6)]}
    with pytest.raises(ValueError, match="no order"):
        reorder(twins, rng)


def test_spans_are_whole_segments_and_say_nothing_of_position():
    """Under the uniform sampler of 8 frames, how many frames an event shows must not tell where it happens
    (world v3 gave three events 3, 2 and 3 frames, always in that order), and an order partner keeps the spans."""
    rng = np.random.default_rng(7)
    sampled = build_sampler("uniform", num_frames=8)(24, 8).indices
    short_at = [0, 0, 0]
    for _ in range(300):
        spec = sample_spec(rng, num_frames=24, segments=8, sound=None)
        spans = [e["frames"] for e in spec["events"]]
        assert all(a % 3 == 0 and b % 3 == 0 for a, b in spans)  # segment edges
        shown = [sum(a <= i < b for i in sampled) for a, b in spans]
        assert sorted(shown) == ([2, 3, 3] if len(spans) == 3 else [4, 4])
        if len(spans) == 3:
            short_at[shown.index(2)] += 1
        if can_reorder(spec):
            assert [e["frames"] for e in reorder(spec, rng)["events"]] == spans
    assert min(short_at) > 0.25 * sum(short_at)  # the short span falls at every place


def test_world_config_checks_segments():
    with pytest.raises(ValueError, match="segments must be from 3"):
        SyntheticConfig(num_frames=24, segments=2)
    with pytest.raises(ValueError, match="to num_frames \\(8\\)"):
        SyntheticConfig(num_frames=8, segments=9)


def test_shapes_are_drawn_independently_so_the_caption_does_not_imply_them():
    rng = np.random.default_rng(0)
    specs = [sample_spec(rng, num_frames=24, segments=8, sound=None) for _ in range(300)]
    repeated = [s for s in specs if len({e["shape"] for e in s["events"]}) < len(s["events"])]
    assert 0.2 < len(repeated) / len(specs) < 0.8
    for spec in specs:  # the objects still sit on distinct cells
        cells = [tuple(e["from"]) for e in spec["events"]]
        assert len(set(cells)) == len(cells)


def test_object_states_follow_the_events():
    spec = {"num_frames": 24, "sound": None, "events": [
        {"action": "moves", "shape": "square", "colour": "red", "direction": "right",
         "from": [1 / 6, 0.5], "to": [0.5, 0.5], "frames": [0, 12], "at": 6},
        {"action": "appears", "shape": "circle", "colour": "blue", "from": [5 / 6, 5 / 6], "frames": [12, 24], "at": 18},
    ]}
    assert caption(spec) == "a red square moves right, then a blue circle appears, in silence"
    assert [o["shape"] for o in object_states(spec, 17)] == ["square"]
    assert [o["shape"] for o in object_states(spec, 18)] == ["square", "circle"]
    assert object_states(spec, 0)[0]["centre"] == [1 / 6, 0.5]
    assert object_states(spec, 11)[0]["centre"] == [0.5, 0.5]
    frames = render_frames(spec, 48)
    assert tuple(frames[0, 24, 8]) == COLOURS["red"] and tuple(frames[20, 40, 40]) == COLOURS["blue"]


def test_objects_seen_during_their_own_event_only_unless_persistent():
    rng = np.random.default_rng(5)
    spec = sample_spec(rng, num_frames=24, segments=8, sound=None, persistent=False)
    assert spec["persistent"] is False and caption(reorder(spec, rng)) != caption(spec)
    for frame in range(24):
        seen = [(e["at"] if e["action"] == "appears" else e["frames"][0]) <= frame < e["frames"][1] for e in spec["events"]]
        assert [o["shape"] for o in object_states(spec, frame)] == [e["shape"] for e, s in zip(spec["events"], seen) if s]
    persistent = {**spec, "persistent": True}
    last = spec["num_frames"] - 1
    assert len(object_states(persistent, last)) == len(spec["events"]) > len(object_states(spec, last))
    frames = render_frames(spec, 48)
    first = spec["events"][0]
    x, y = (int(c * 48) for c in first["from"])
    colour = first["new_colour"] if first["action"] == "turns" else first["colour"]
    shown = first["frames"][1] - 1  # its last frame: where a mover has arrived, a turned object is recoloured
    if first["action"] == "moves":
        x, y = (int(c * 48) for c in first["to"])
    assert tuple(frames[shown, y, x]) == COLOURS[colour] and tuple(frames[first["frames"][1], y, x]) == BACKGROUND


def test_persistent_events_are_excursions_so_no_frame_tells_which_are_over():
    rng = np.random.default_rng(7)
    specs = [sample_spec(rng, num_frames=24, segments=8, sound=None, persistent=True) for _ in range(40)]
    assert all(spec["persistent"] and spec["returns"] for spec in specs)
    actions = set()
    for spec in specs:
        for frame in range(24):
            shown = {o["shape"] + o["colour"] + str(o["centre"]): o for o in object_states(spec, frame)}
            for event in spec["events"]:
                start, stop = event["frames"]
                actions.add(event["action"])
                rest = event["shape"] + event["colour"] + str(event["from"])
                if event["action"] == "appears":  # on screen from its appearance to its span's end only
                    assert (rest in shown) == (event["at"] <= frame < stop), (frame, event)
                elif not start <= frame < stop:  # before and after its span: on its cell, in its colour
                    assert rest in shown, (frame, event)
    assert actions == {"appears", "moves", "turns"}
    # drawn: a turned object is back in its colour on the frame after its span (it kept the new one in v4 specs)
    spec = next(s for s in specs if s["events"][0]["action"] == "turns")
    first = spec["events"][0]
    x, y = (int(c * 48) for c in first["from"])
    frames = render_frames(spec, 48)
    after = first["frames"][1]
    assert tuple(frames[after - 1, y, x]) == COLOURS[first["new_colour"]]
    assert tuple(frames[after, y, x]) == COLOURS[first["colour"]]
    kept = render_frames({**spec, "returns": False}, 48)
    assert tuple(kept[after, y, x]) == COLOURS[first["new_colour"]]


def test_same_seed_same_set(tmp_path):
    cfg = SyntheticConfig(num=4, seed=11, size=32, num_frames=8, workers=1)
    generate(str(tmp_path / "a"), cfg, progress=False)
    generate(str(tmp_path / "b"), cfg, progress=False)
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "pairs.json", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    other = SyntheticConfig(num=4, seed=12, size=32, num_frames=8, workers=1)
    generate(str(tmp_path / "c"), other, progress=False)
    assert (tmp_path / "a" / "train.jsonl").read_text() != (tmp_path / "c" / "train.jsonl").read_text()


def test_tokenizer_round_trips_captions(synthetic_dir, synthetic_records):
    tok = load_tokenizer(synthetic_dir)
    assert (tok.pad_token, tok.cls_token, tok.sep_token, tok.bos_token, tok.eos_token, tok.mask_token) == (
        "[PAD]", "[CLS]", "[SEP]", "[BOS]", "[SEP]", "[MASK]")
    assert tok.pad_token_id == 0 and tok.unk_token_id not in (None, tok.pad_token_id)
    for record in _all(synthetic_records):
        ids = tok(record["caption"])["input_ids"]
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == record["caption"]
    words = set(" ".join(SHAPES + tuple(COLOURS)).split())
    assert all(len(tok.tokenize(w)) == 1 for w in words)  # the closed vocabulary is whole words
    with pytest.raises(FileNotFoundError, match="make_synthetic"):
        load_tokenizer(os.path.dirname(synthetic_dir))


def test_cli_arguments_map_to_the_config():
    out, cfg = parse_args(["/tmp/x", "--num", "50", "--seed", "4", "--size", "64", "--silent-fraction", "0.5"])
    assert out == "/tmp/x" and (cfg.num, cfg.seed, cfg.size, cfg.silent_fraction, cfg.fps) == (50, 4, 64, 0.5, 8)
    with pytest.raises(ValueError, match="even"):
        parse_args(["/tmp/x", "--size", "33"])
    assert not parse_args(["/tmp/x"])[1].persistent_objects
    assert parse_args(["/tmp/x", "--persistent-objects"])[1].persistent_objects
