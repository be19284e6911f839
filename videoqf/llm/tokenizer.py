"""Loading the local caption tokenizer and resolving its special tokens.

The synthetic world's tokenizer is a `tokenizers` tokenizer.json (WordPiece, specials [PAD] [UNK]
[CLS] [SEP] [MASK] [BOS]); a directory written by `save_pretrained` also works. Loaded through
transformers' `PreTrainedTokenizerFast`, a bare tokenizer.json knows none of its special
tokens' roles, so they are looked up by their conventional spellings; EOS is [SEP] when there is
no dedicated end token. Only local files are read, never the hub.

An LLM's own tokenizer may lack roles the synthetic one has, as released ones do: OPT-style and
LLaMA-style tokenizers have no pad token (the bridge pads with embeddings it builds itself and masks
them, so the pad id only fills finished rows in ``generate``: the end token then, as transformers
does), and T5's has no BOS (the encoder reads no start token; the decoder starts from the model's
``decoder_start_token_id``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

# First spelling present in the vocabulary wins.
_SPECIAL_SPELLINGS = {
    "pad_token": ("[PAD]", "<pad>"),
    "eos_token": ("[EOS]", "</s>", "<|endoftext|>", "[SEP]"),
    "bos_token": ("[BOS]", "<s>", "<|startoftext|>"),
    "unk_token": ("[UNK]", "<unk>"),
}


# transformers' processors add these to a tokenizer: they stand for a model's queries and are never read as text
MEDIA_PLACEHOLDERS = ("<image>", "<video>")


def text_vocab_size(tokenizer: PreTrainedTokenizerBase) -> int:
    """1 + the largest id a text can tokenize to (the processors' media placeholders left out)."""
    vocab = tokenizer.get_vocab()
    return 1 + max(i for t, i in vocab.items() if t not in MEDIA_PLACEHOLDERS)


@dataclass(frozen=True)
class SpecialTokenIds:
    """bos is None when the tokenizer has no start token (then nothing is prepended); pad is the end
    token when the tokenizer has no pad token."""

    pad: int
    eos: int
    bos: int | None


def register_special_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give roles (pad/eos/bos/unk) that are unset to the conventional special tokens present in
    the vocabulary. Returns the same tokenizer."""
    vocab = tokenizer.get_vocab()
    for role, spellings in _SPECIAL_SPELLINGS.items():
        if getattr(tokenizer, role) is None:
            found = next((s for s in spellings if s in vocab), None)
            if found is not None:
                setattr(tokenizer, role, found)
    return tokenizer


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> SpecialTokenIds:
    """pad / eos / bos ids; a tokenizer without an end token is an error."""
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} needs an end token (eos: {tokenizer.eos_token!r}); "
            "add [SEP] or [EOS]"
        )
    pad = tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    return SpecialTokenIds(pad=pad, eos=tokenizer.eos_token_id, bos=tokenizer.bos_token_id)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """A local tokenizer: a tokenizer.json file, or a directory holding tokenizer_config.json
    (save_pretrained) or tokenizer.json."""
    path = Path(path)
    if path.is_file():
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path))
    elif (path / "tokenizer_config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    elif (path / "tokenizer.json").is_file():
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"))
    elif path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} holds neither tokenizer_config.json nor tokenizer.json")
    else:
        raise FileNotFoundError(f"tokenizer {path} does not exist")
    register_special_tokens(tokenizer)
    special_token_ids(tokenizer)  # fail here, naming the file, rather than at the first batch
    return tokenizer
