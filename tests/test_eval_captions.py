"""Caption metrics vs an independent CIDEr-D / BLEU-4 written from the papers, and the PTB-style tokenizer."""
import math
from collections import Counter

import pytest

from videoqf.eval.captions import caption_metrics, tokenize


def _ngrams(words, n):
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def reference_cider_d(predictions, references, sigma=6.0):
    """CIDEr-D (Vedantam et al. 2015 + COCO server changes), straight from the formulas.

    g_k(s) = tf_k(s) * log(|I| / max(1, #clips whose references contain n-gram k));
    CIDEr_n(c, S) = 1/m sum_j min(g(c), g(s_j)) . g(s_j) / (|g(c)| |g(s_j)|) * exp(-(l_c - l_sj)^2 / 2 sigma^2);
    CIDEr-D = 10 * mean_n CIDEr_n, averaged over clips. (Lengths in words: pycocoevalcap counts bigrams,
    which gives the same difference whenever both captions are non-empty.)
    """
    ids = list(references)
    doc_freq = Counter()
    for i in ids:
        doc_freq.update({g for ref in references[i] for n in range(1, 5) for g in _ngrams(ref.split(), n)})

    def vector(words, n):
        return {g: tf * math.log(len(ids) / max(1.0, doc_freq[g])) for g, tf in _ngrams(words, n).items()}

    total = 0.0
    for i in ids:
        cand = predictions[i].split()
        per_n = []
        for n in range(1, 5):
            vc = vector(cand, n)
            acc = 0.0
            for ref in references[i]:
                words = ref.split()
                vr = vector(words, n)
                norm = math.sqrt(sum(x * x for x in vc.values())) * math.sqrt(sum(x * x for x in vr.values()))
                dot = sum(min(vc[g], vr.get(g, 0.0)) * vr.get(g, 0.0) for g in vc)
                cos = dot / norm if norm > 0 else 0.0
                acc += cos * math.exp(-((len(cand) - len(words)) ** 2) / (2 * sigma**2))
            per_n.append(acc / len(references[i]))
        total += 10.0 * sum(per_n) / 4
    return total / len(ids)


def reference_bleu4(predictions, references):
    """Corpus BLEU-4 (Papineni et al. 2002): clipped n-gram precisions, closest reference length."""
    matches, guesses = [0] * 4, [0] * 4
    cand_len = ref_len = 0
    for i in references:
        cand = predictions[i].split()
        refs = [r.split() for r in references[i]]
        for n in range(1, 5):
            max_ref = Counter()
            for r in refs:
                max_ref |= _ngrams(r, n)
            counts = _ngrams(cand, n)
            matches[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            guesses[n - 1] += max(0, len(cand) - n + 1)
        cand_len += len(cand)
        ref_len += min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]
    log_precision = sum(math.log(m / g) for m, g in zip(matches, guesses)) / 4
    brevity = min(0.0, 1 - ref_len / cand_len)
    return math.exp(log_precision + brevity)


PREDICTIONS = {
    "c1": "a red square moves left then a blue circle appears",
    "c2": "a dog a dog runs on the grass",
    "c3": "a blue circle appears",
}
REFERENCES = {
    "c1": ["a red square moves left then a blue circle appears", "a red square slides left then a circle appears"],
    "c2": ["a dog runs on the green grass", "the dog is running on grass", "a brown dog runs"],
    "c3": ["a blue circle appears then a red square moves right while a low hum plays"],
}


def test_cider_and_bleu_match_independent_implementation():
    metrics = caption_metrics(PREDICTIONS, REFERENCES)
    assert metrics["cider"] == pytest.approx(reference_cider_d(PREDICTIONS, REFERENCES), rel=1e-9)
    assert metrics["bleu4"] == pytest.approx(reference_bleu4(PREDICTIONS, REFERENCES), rel=1e-6)
    assert 0.0 < metrics["bleu4"] < 1.0 and 0.0 < metrics["cider"] < 10.0


def test_identical_captions_give_the_maximum():
    # disjoint vocabularies, so every n-gram has a non-zero IDF: each clip's CIDEr-D is exactly 10
    refs = {"a": ["red square moves left"], "b": ["blue circle appears now"], "c": ["green triangle spins fast"]}
    metrics = caption_metrics({k: v[0] for k, v in refs.items()}, refs)
    assert metrics["cider"] == pytest.approx(10.0)
    assert metrics["bleu4"] == pytest.approx(1.0)


def test_single_clip_cider_is_zero_idf_is_over_the_evaluated_set():
    metrics = caption_metrics({"a": "a red square"}, {"a": ["a red square"]})
    assert metrics["cider"] == 0.0
    assert metrics["bleu4"] > 0.0  # a perfect caption still gets a BLEU, so CIDEr's 0 is the IDF's doing


def test_case_and_punctuation_do_not_change_scores():
    noisy = {k: v.upper().replace(" then", ", then") + "." for k, v in PREDICTIONS.items()}
    assert caption_metrics(noisy, REFERENCES) == caption_metrics(PREDICTIONS, REFERENCES)


@pytest.mark.parametrize(
    ("raw", "tokens"),
    [
        ("A man's riding a horse.", "a man 's riding a horse"),
        ("Don't stop -- now!", "do n't stop now"),
        ("It can't be; they won't.", "it ca n't be they wo n't"),
        ("3.5 km, 1,000 people...", "3.5 km 1,000 people"),
        ('a well-known (small) dog: "quoted" `text\'', "a well-known small dog quoted text"),
        ("50% of $5 & more", "50 % of $ 5 & more"),
        ("  They're  here\nnow?  ", "they 're here now"),
        ("A red square moves left, then a blue circle appears, while a low hum plays.",
         "a red square moves left then a blue circle appears while a low hum plays"),
    ],
)
def test_tokenizer_matches_ptb_behaviour(raw, tokens):
    assert tokenize(raw) == tokens


def test_mismatched_ids_are_named():
    with pytest.raises(ValueError, match="no prediction for \\['b'\\]"):
        caption_metrics({"a": "x"}, {"a": ["x"], "b": ["y"]})
    with pytest.raises(ValueError, match="non-empty lists"):
        caption_metrics({"a": "x"}, {"a": []})
    with pytest.raises(ValueError, match="non-empty lists"):
        caption_metrics({"a": "x"}, {"a": "x"})
