"""Caption metrics: CIDEr-D and BLEU-4 through pycocoevalcap, with a pure-Python PTB-style tokenizer.

The scorers are pycocoevalcap's ``Cider`` (CIDEr-D: Vedantam et al. 2015, with the clipping and
Gaussian length penalty of the COCO server, sigma = 6, x10) and ``Bleu(4)`` (corpus BLEU, "closest"
reference length). Their inputs must be tokenized first; pycocoevalcap's ``PTBTokenizer`` runs
Stanford CoreNLP in Java, which we do not require, so :func:`tokenize` reproduces what it does to plain
captions: ``PTBTokenizer -preserveLines -lowerCase``, then drop the tokens in its ``PUNCTUATIONS`` list
(quotes, brackets, ``. ? ! , : ; - -- ...``).

What we reproduce: lower-casing; punctuation split off words and dropped; clitics split and kept as
tokens (``man's`` -> ``man 's``, ``don't`` -> ``do n't``); hyphenated words kept whole
(``well-known``); numbers with inner ``.``/``,`` kept whole (``3.5``, ``1,000``); other symbols
(``$ % & # /`` ...) split off and kept as tokens.
Known differences from CoreNLP 3.4.1 (rare in captions): no ``cannot`` -> ``can not`` /
``gonna`` -> ``gon na`` splits; abbreviations with periods (``u.s.``) lose their periods; square
brackets are dropped (CoreNLP writes ``-LSB-``/``-RSB-``, which its list does not remove); no Unicode
quote normalisation. None of these occur in the synthetic captions.

CIDEr's IDF is computed over the references of the evaluated set itself (as the COCO server does), so
a score depends on the whole set: with a single clip every IDF is log(1/1) = 0 and CIDEr is 0.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS, plus the raw characters CoreNLP would have turned
# into one of them (" -> `` or '', ( ) -> -LRB- -RRB-) and the brackets (see the module docstring).
_DROPPED = {"''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-", ".", "?", "!", ",", ":", "-", "--",
            "...", ";", '"', "(", ")", "[", "]", "{", "}"}
_TOKEN = re.compile(
    r"n't\b"                        # do|n't, is|n't: the clitic is a token of its own
    r"|'(?:s|re|ve|ll|d|m)\b"       # man|'s, they|'re
    r"|\d+(?:[.,]\d+)+"             # 3.5, 1,000
    r"|\w+?(?=n't\b)"               # the word before n't
    r"|\w+(?:-\w+)*"                # words, hyphenated words whole
    r"|\S"                          # any other symbol on its own
)


def tokenize(caption: str) -> str:
    """PTB-style tokens of one caption, lower-cased, punctuation dropped, joined by single spaces."""
    tokens = _TOKEN.findall(caption.lower().replace("\n", " "))
    return " ".join(token for token in tokens if token not in _DROPPED)


def caption_metrics(
    predictions: Mapping[object, str], references: Mapping[object, Sequence[str]]
) -> dict[str, float]:
    """CIDEr-D and BLEU-4 of one predicted caption per id against that id's references.

    predictions: {id: caption}; references: {id: [caption, ...]} with the same ids (each with at least
    one reference). Returns ``{"cider": ..., "bleu4": ...}`` on pycocoevalcap's scales (CIDEr x10 as
    on the COCO server, e.g. 1.2 is reported as 120 in papers; BLEU-4 in [0, 1]).
    """
    missing = set(references) - set(predictions)
    extra = set(predictions) - set(references)
    if missing or extra:
        raise ValueError(
            f"predictions and references must have the same ids: no prediction for {sorted(map(str, missing))[:10]}, "
            f"no references for {sorted(map(str, extra))[:10]}"
        )
    if not predictions:
        raise ValueError("caption_metrics got no captions")
    empty = [key for key, refs in references.items() if isinstance(refs, str) or len(refs) == 0]
    if empty:
        raise ValueError(f"references must be non-empty lists of strings; ids {empty[:10]} are not")
    ids = list(references)
    res = {i: [tokenize(predictions[i])] for i in ids}
    gts = {i: [tokenize(ref) for ref in references[i]] for i in ids}
    cider, _ = Cider().compute_score(gts, res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {"cider": float(cider), "bleu4": float(bleu[3])}
