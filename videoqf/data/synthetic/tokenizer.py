"""A BERT-style WordPiece tokenizer trained locally on the synthetic captions (``tokenizers``).

Lower-cased, BERT special tokens [PAD] [UNK] [CLS] [SEP] [MASK] plus [BOS] (the decoder start token
of BLIP-2's VTG / captioning), "[CLS] text [SEP]" template. Saved as ``tokenizer.json`` and loaded
as a ``transformers.PreTrainedTokenizerFast`` so the text branch uses it like any hub tokenizer.
"""
from __future__ import annotations

import os

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]"]
TOKENIZER_FILE = "tokenizer.json"


def train_tokenizer(captions: list[str], out_dir: str, *, vocab_size: int = 1000) -> str:
    """Train on ``captions``; write ``out_dir/tokenizer.json`` and return its path.

    The trainer merges until every caption word is one token; its intermediate sub-word pieces
    depend on tie-breaking that changes between runs, so the vocabulary is then pruned to the
    whole words and the single characters (plus their "##" forms, which spell any unseen word) and
    numbered in sorted order: the same captions always give the same file and the same ids.
    """
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    tok.train_from_iterator(captions, trainer)
    words = {w for c in captions for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(c))}
    learned = set(tok.get_vocab()) - set(SPECIAL_TOKENS)
    if not words <= learned:
        raise ValueError(f"vocab_size={vocab_size} is too small to hold every caption word ({len(words)} words)")
    kept = sorted(t for t in learned if t in words or len(t.removeprefix("##")) == 1)
    tok.model = models.WordPiece({t: i for i, t in enumerate(SPECIAL_TOKENS + kept)}, unk_token="[UNK]")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    path = os.path.join(out_dir, TOKENIZER_FILE)
    tok.save(path)
    return path


def load_tokenizer(directory: str) -> PreTrainedTokenizerFast:
    """The fast tokenizer saved in ``directory`` with pad/unk/cls/sep/mask/bos set (eos = [SEP])."""
    path = os.path.join(directory, TOKENIZER_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {TOKENIZER_FILE} in {directory!r}: run tools/make_synthetic.py first")
    return PreTrainedTokenizerFast(
        tokenizer_file=path,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="[BOS]",
        eos_token="[SEP]",
    )
