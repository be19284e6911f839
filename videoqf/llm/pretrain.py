"""Pre-training a tiny GPT-2 on captions, so stage 2 runs against a frozen *pretrained* LM.

In the real setting BLIP-2 bridges to an LLM that already speaks the language; in the synthetic
world that LLM is this small transformers GPT-2 (Radford et al., 2019) trained for a few hundred
steps on the caption text with the world's own tokenizer. Each example is [BOS] caption [EOS]
(BOS only when the tokenizer has one), padded on the right with labels -100, and (``random_offset``)
placed at a random starting position, as stage 2 places it after the video tokens. With
``prefix_slots`` the caption is preceded by that many soft vectors made from it by a caption encoder
trained alongside (``prefix_encoder.py``: a real LLM reads soft prompts, a caption-only tiny LM does
not), except for a ``plain_fraction`` of the examples. AdamW with linear warm-up and cosine decay. The
LM (not the encoder) is written with `save_pretrained` (model + tokenizer) and loads with
`LLMConfig(arch="causal", path=OUT_DIR)`.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, get_cosine_schedule_with_warmup

from videoqf.llm.config import CaptionLMConfig
from videoqf.llm.prefix_encoder import CaptionPrefixEncoder
from videoqf.llm.tokenizer import special_token_ids


def read_captions(paths: list[str | Path]) -> list[str]:
    """Captions from text files (one per line) and JSONL annotation files (`.jsonl`, a
    "caption" field per record). Blank lines are skipped; a record without a caption is an error."""
    captions = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"caption file {path} does not exist")
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("caption"), str):
                    raise ValueError(f"{path}:{lineno}: record has no string 'caption' field")
                captions.append(record["caption"])
            else:
                captions.append(line.strip())
    if not captions:
        raise ValueError(f"no captions in {[str(p) for p in paths]}")
    return captions


def encode_captions(captions: list[str], tokenizer, max_len: int) -> list[torch.Tensor]:
    """Each caption as [BOS] ids [EOS], truncated to max_len tokens in all."""
    special = special_token_ids(tokenizer)
    bos = [] if special.bos is None else [special.bos]
    body = max_len - len(bos) - 1
    ids = tokenizer(captions, add_special_tokens=False)["input_ids"]
    return [torch.tensor(bos + seq[:body] + [special.eos]) for seq in ids]


def build_caption_lm(config: CaptionLMConfig, tokenizer) -> GPT2LMHeadModel:
    special = special_token_ids(tokenizer)
    gpt2 = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.max_len,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        bos_token_id=special.bos if special.bos is not None else special.eos,
        eos_token_id=special.eos,
        pad_token_id=special.pad,
        initializer_range=config.init_std,
        activation_function=config.activation,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
    )
    return GPT2LMHeadModel(gpt2)


def pretrain_caption_lm(
    captions: list[str],
    tokenizer,
    config: CaptionLMConfig,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[GPT2LMHeadModel, list[float]]:
    """Train on `captions`; returns the model (eval mode) and the per-step losses. With out_dir,
    model and tokenizer are saved there with save_pretrained."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    special = special_token_ids(tokenizer)
    slots = config.prefix_slots
    examples = encode_captions(captions, tokenizer, config.max_len - slots)
    model = build_caption_lm(config, tokenizer)
    encoder = (CaptionPrefixEncoder(vocab_size=len(tokenizer), max_len=config.max_len, width=config.n_embd,
                                    heads=config.n_head, slots=slots) if slots else None)
    params = list(model.parameters()) + (list(encoder.parameters()) if encoder is not None else [])
    model.train()
    # one fused kernel over the many small tensors (measured in benchmarks/results/first_run.md)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    losses = []
    bar = tqdm(range(config.steps), desc="caption LM", disable=not progress)
    for _ in bar:
        batch = [examples[rng.randrange(len(examples))] for _ in range(config.batch_size)]
        ids = pad_sequence(batch, batch_first=True, padding_value=special.pad)
        mask = pad_sequence([torch.ones_like(x) for x in batch], batch_first=True)
        embeds, labels = model.transformer.wte(ids), ids.masked_fill(mask == 0, -100)
        if encoder is not None:  # [prefix; caption], the prefix masked out for the plain examples
            with_prefix = torch.tensor([rng.random() >= config.plain_fraction for _ in batch])
            embeds = torch.cat([encoder(ids, mask.bool()), embeds], dim=1)
            mask = torch.cat([with_prefix[:, None].long().expand(-1, slots), mask], dim=1)
            labels = torch.cat([torch.full((len(batch), slots), -100), labels], dim=1)
        lengths = mask.sum(1).tolist()
        starts = [rng.randrange(config.max_len - n + 1) if config.random_offset else 0 for n in lengths]
        # as the bridge numbers them: cumsum of the attention mask, so a masked prefix takes no position
        positions = torch.tensor(starts)[:, None] + (mask.cumsum(1) - 1).clamp_min(0)
        loss = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions.clamp_max(config.max_len - 1),
                     labels=labels).loss
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"caption LM loss became {loss.item()} at step {len(losses)}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return model, losses
