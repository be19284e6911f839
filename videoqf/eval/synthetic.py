"""Diagnostics on the synthetic world: order / sound pair accuracy, and event parsing of captions.

Pair accuracy follows the "image score" of Winoground (Thrush et al. 2022) with videos: for a pair of
clips (a, b) whose captions differ only in event order (or only in the sound), the model is right when
caption a scores higher with video a than with video b AND caption b scores higher with video b than
with video a. Both directions must hold, so a model blind to the difference (equal scores) gets 0 and
one with random scores about 0.25. Ties count as wrong.

Caption grammar of the synthetic generator (``tools/make_synthetic.py``), kept here in one place::

    caption := event (", then " event)* [", while " sound " plays" | ", in silence"] ["."]
    e.g.     "a red square moves left, then a blue circle appears, while a low hum plays"

``sound`` is a noun phrase with its article ("a low hum", "a high beep", "a noise burst"); a clip without
audio says "in silence" (``vocab.SILENCE_PHRASE``), and no sound clause reads the same. Parsing is
tolerant: case, repeated spaces, a final period, a missing comma before "then"/"while" and an "and then"
are accepted.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from videoqf.data.synthetic.vocab import SILENCE_PHRASE
from videoqf.eval.retrieval import ScoreFn, call_score_fn

# the separators of the grammar above, loosened for generated text
_EVENT_SEPARATOR = re.compile(r"\s*,?\s*\b(?:and\s+)?then\s+")
_SOUND_CLAUSE = re.compile(rf"\s*,?\s*\b(?:while\s+(?P<sound>.+?)\s+plays|{re.escape(SILENCE_PHRASE)})$")

def _normalize(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(" .").strip()


def parse_events(caption: str) -> tuple[list[str], str | None]:
    """Events in order and the sound (None in silence or without a sound clause) of a synthetic caption.

    "A red square moves left, then a blue circle appears, while a low hum plays." ->
    (["a red square moves left", "a blue circle appears"], "a low hum"). Empty text -> ([], None).
    """
    text = _normalize(caption)
    sound = None
    match = _SOUND_CLAUSE.search(text)
    if match:
        if match.group("sound") is not None:  # None: the silence clause
            sound = match.group("sound").strip(" ,")
        text = text[: match.start()]
    events = [event.strip(" ,") for event in _EVENT_SEPARATOR.split(text)]
    return [event for event in events if event], sound


def caption_order_correct(generated: str, reference: str) -> bool:
    """Whether the generated caption names the reference's events, all of them, in the same order."""
    return parse_events(generated)[0] == parse_events(reference)[0]


def _aligned_event_words(generated: str, reference: str) -> list[tuple[list[str], list[str]]]:
    """(reference words, generated words) of each reference event with the generated event at its place,
    the article left out; a missing generated event has no words."""
    generated_events = parse_events(generated)[0]
    return [(event.split()[1:], generated_events[i].split()[1:] if i < len(generated_events) else [])
            for i, event in enumerate(parse_events(reference)[0])]


def event_word_accuracy(generated: str, reference: str) -> float:
    """Share of the reference's event words (after each event's article) that the generated caption has
    at the same place in the same event: graded credit where ``caption_order_correct`` is all or nothing.

    "a red square moves left" against "a red circle moves left": 3 of 4. A missing event scores 0 for
    its words; extra generated events cost nothing here (``caption_order_correct`` counts them).
    """
    aligned = _aligned_event_words(generated, reference)
    total = sum(len(words) for words, _ in aligned)
    right = sum(a == b for words, said in aligned for a, b in zip(words, said))
    return right / total if total else float(parse_events(generated)[0] == [])


# the word places of an event after its article: "red square moves left", "blue circle turns green"
EVENT_SLOTS = ("colour", "shape", "action", "detail")


def event_slot_counts(generated: str, reference: str) -> dict[str, tuple[int, int]]:
    """Per slot of the reference's events: (words the generated caption has at that place, words), so
    that, summed over clips, they say WHAT a model gets wrong (``event_word_accuracy`` says how much).

    "detail" is the direction of "moves" or the new colour of "turns"; "appears" has none. Chance is 1/4
    for colour, 1/3 for shape and action, 1/4 (direction) or 1/3 (new colour) for detail.
    "a red circle moves right" against "a red square moves left": colour (1, 1), shape (0, 1), action (1, 1),
    detail (0, 1).
    """
    counts = {slot: [0, 0] for slot in EVENT_SLOTS}
    for words, said in _aligned_event_words(generated, reference):
        for slot, word, guess in zip(EVENT_SLOTS, words, said + [None] * len(words)):
            counts[slot][0] += word == guess
            counts[slot][1] += 1
    return {slot: (right, total) for slot, (right, total) in counts.items()}


def caption_sound_correct(generated: str, reference: str) -> bool:
    """Whether the generated caption names the reference's sound (or, like it, no sound)."""
    return parse_events(generated)[1] == parse_events(reference)[1]


def pair_accuracy(
    scores: torch.Tensor | ScoreFn,
    pairs: Sequence[tuple[object, object]],
    text_index_of_clip: Mapping[object, int],
    video_index_of_clip: Mapping[object, int],
) -> float:
    """Fraction of clip pairs (a, b) where s(text a, video a) > s(text a, video b) and
    s(text b, video b) > s(text b, video a).

    scores: a similarity matrix [T, V], or ``score_fn(text_indices [n], video_indices [n]) -> [n]``
    (e.g. the matching head; called once on all 4 * len(pairs) text-video combinations).
    text_index_of_clip / video_index_of_clip map a clip id of ``pairs`` to its row / column.
    """
    if not pairs:
        raise ValueError("pair_accuracy got no pairs")
    unknown = [c for pair in pairs for c in pair if c not in text_index_of_clip or c not in video_index_of_clip]
    if unknown:
        raise KeyError(f"clips {unknown[:10]} of the pairs have no text or video index")
    text_a = torch.tensor([text_index_of_clip[a] for a, _ in pairs])
    text_b = torch.tensor([text_index_of_clip[b] for _, b in pairs])
    video_a = torch.tensor([video_index_of_clip[a] for a, _ in pairs])
    video_b = torch.tensor([video_index_of_clip[b] for _, b in pairs])
    # the 4 combinations per pair, in blocks: (ta, va), (ta, vb), (tb, vb), (tb, va)
    texts = torch.cat([text_a, text_a, text_b, text_b])
    videos = torch.cat([video_a, video_b, video_b, video_a])
    if callable(scores):
        values = call_score_fn(scores, texts, videos)
    else:
        if scores.dim() != 2:
            raise ValueError(f"scores must be a [num_texts, num_videos] matrix, got shape {tuple(scores.shape)}")
        values = scores[texts.to(scores.device), videos.to(scores.device)]
        if torch.isnan(values).any():
            raise ValueError("scores contain NaN for some pairs")
    aa, ab, bb, ba = values.reshape(4, len(pairs))
    return ((aa > ab) & (bb > ba)).double().mean().item()
