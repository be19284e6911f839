"""Synthetic diagnostics: pair accuracy on hand-made scores, caption event/sound parsing."""
import pytest
import torch

from videoqf.eval.synthetic import (caption_order_correct, caption_sound_correct, event_slot_counts,
                                    event_word_accuracy, pair_accuracy, parse_events)

# clips x, y (an order-swapped pair) and u, v (a sound-swapped pair); texts and videos in other orders
TEXT = {"x": 0, "y": 1, "u": 2, "v": 3}
VIDEO = {"x": 3, "y": 2, "u": 1, "v": 0}


def _matrix(entries):
    sim = torch.zeros(4, 4)
    for (text_clip, video_clip), value in entries.items():
        sim[TEXT[text_clip], VIDEO[video_clip]] = value
    return sim


def test_pair_accuracy_needs_both_directions():
    sim = _matrix({
        ("x", "x"): 0.9, ("x", "y"): 0.1, ("y", "y"): 0.8, ("y", "x"): 0.2,  # right both ways
        ("u", "u"): 0.9, ("u", "v"): 0.1, ("v", "v"): 0.3, ("v", "u"): 0.4,  # caption v prefers video u
    })
    assert pair_accuracy(sim, [("x", "y")], TEXT, VIDEO) == 1.0
    assert pair_accuracy(sim, [("u", "v")], TEXT, VIDEO) == 0.0
    assert pair_accuracy(sim, [("x", "y"), ("u", "v")], TEXT, VIDEO) == 0.5
    # a pair is symmetric: (b, a) is judged the same as (a, b)
    assert pair_accuracy(sim, [("y", "x"), ("v", "u")], TEXT, VIDEO) == 0.5


def test_pair_accuracy_ties_are_wrong():
    assert pair_accuracy(torch.ones(4, 4), [("x", "y"), ("u", "v")], TEXT, VIDEO) == 0.0


def test_pair_accuracy_with_score_fn_matches_matrix():
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(4, 4, generator=g)
    pairs = [("x", "y"), ("u", "v"), ("y", "u"), ("v", "x")]
    calls = []

    def score_fn(texts, videos):
        calls.append(len(texts))
        return sim[texts, videos]

    expected = pair_accuracy(sim, pairs, TEXT, VIDEO)
    assert pair_accuracy(score_fn, pairs, TEXT, VIDEO) == expected
    assert calls == [16]
    # by hand
    hits = [
        sim[TEXT[a], VIDEO[a]] > sim[TEXT[a], VIDEO[b]] and sim[TEXT[b], VIDEO[b]] > sim[TEXT[b], VIDEO[a]]
        for a, b in pairs
    ]
    assert expected == sum(bool(h) for h in hits) / len(pairs)


def test_pair_accuracy_random_scores_near_a_quarter():
    g = torch.Generator().manual_seed(0)
    n = 4000
    index = {i: i for i in range(2 * n)}
    random_scores = lambda texts, videos: torch.rand(len(texts), generator=g)  # noqa: E731
    accuracy = pair_accuracy(random_scores, [(2 * i, 2 * i + 1) for i in range(n)], index, index)
    assert abs(accuracy - 0.25) < 0.03


def test_pair_accuracy_bad_input():
    with pytest.raises(KeyError, match="'z'"):
        pair_accuracy(torch.zeros(4, 4), [("x", "z")], TEXT, VIDEO)
    with pytest.raises(ValueError, match="no pairs"):
        pair_accuracy(torch.zeros(4, 4), [], TEXT, VIDEO)


@pytest.mark.parametrize(
    ("caption", "events", "sound"),
    [
        ("a red square moves left, then a blue circle appears, while a low hum plays",
         ["a red square moves left", "a blue circle appears"], "a low hum"),
        ("A red square moves left, then a blue circle appears, then a green triangle spins.",
         ["a red square moves left", "a blue circle appears", "a green triangle spins"], None),
        ("  a red square   moves left then a blue circle appears while a high beep plays .  ",
         ["a red square moves left", "a blue circle appears"], "a high beep"),
        ("a blue circle appears, and then a red square moves right, while a noise burst plays.",
         ["a blue circle appears", "a red square moves right"], "a noise burst"),
        ("a yellow star fades out", ["a yellow star fades out"], None),
        ("", [], None),
    ],
)
def test_parse_events(caption, events, sound):
    assert parse_events(caption) == (events, sound)


def test_caption_order_and_sound_correct():
    ref = "a red square moves left, then a blue circle appears, while a low hum plays"
    assert caption_order_correct("A red square moves left then a blue circle appears.", ref)
    swapped = "a blue circle appears, then a red square moves left, while a low hum plays"
    assert not caption_order_correct(swapped, ref)
    assert not caption_order_correct("a red square moves left", ref)  # an event missing
    assert not caption_order_correct("a red square moves right, then a blue circle appears", ref)
    assert caption_sound_correct("a blue circle appears, while a low hum plays.", ref)
    other_sound = "a red square moves left, then a blue circle appears, while a high beep plays"
    assert not caption_sound_correct(other_sound, ref)
    assert not caption_sound_correct("a red square moves left, then a blue circle appears", ref)
    assert caption_sound_correct("a red square moves left", "a red square moves left.")  # both silent


def test_event_word_accuracy_gives_graded_credit_per_event():
    ref = "a red square moves left, then a blue circle appears, while a low hum plays"
    assert event_word_accuracy(ref, ref) == 1.0
    # 3 of 4 words of the first event (the shape is wrong), 2 of 3 of the second (the colour is wrong)
    assert event_word_accuracy("a red circle moves left, then a green circle appears", ref) == 5 / 7
    assert event_word_accuracy("a blue circle appears, then a red square moves left", ref) == 0.0  # swapped
    assert event_word_accuracy("a red square moves left", ref) == 4 / 7  # the second event missing
    assert event_word_accuracy("", ref) == 0.0


def test_silence_clause_is_not_part_of_the_last_event():
    events, sound = parse_events("a red square moves left, then a blue circle appears, in silence.")
    assert events == ["a red square moves left", "a blue circle appears"] and sound is None
    assert caption_order_correct("a red square moves left, then a blue circle appears, while a low hum plays",
                                 "a red square moves left, then a blue circle appears, in silence")
    assert caption_sound_correct("a red square moves left, in silence", "a red square moves left")
    assert not caption_sound_correct("a red square moves left, in silence",
                                     "a red square moves left, while a low hum plays")


def test_event_slot_counts_say_which_word_place_is_wrong():
    ref = "a red square moves left, then a blue circle turns green, then a green triangle appears, in silence"
    counts = event_slot_counts("a red circle moves right, then a blue circle turns green", ref)
    # the third event is missing: its colour, shape and action count as wrong; "appears" has no detail
    assert counts == {"colour": (2, 3), "shape": (1, 3), "action": (2, 3), "detail": (1, 2)}
    assert event_slot_counts(ref, ref) == {"colour": (3, 3), "shape": (3, 3), "action": (3, 3), "detail": (2, 2)}
    assert event_slot_counts("", "a red square appears") == {"colour": (0, 1), "shape": (0, 1), "action": (0, 1),
                                                             "detail": (0, 0)}
