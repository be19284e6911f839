"""Stage 2: projected video tokens prepended to the prompt of a frozen LLM (BLIP-2, InstructBLIP).

Follows BLIP-2 (Li et al., 2023; LAVIS `blip2_opt.py` / `blip2_t5.py`) for the facts:
- decoder-only LLM: the input is [video; BOS prompt; caption EOS], the loss is the LM's own
  shifted cross-entropy with labels -100 on the video tokens, the prompt and the padding;
- encoder-decoder LLM: the encoder reads [video; prompt EOS], the decoder is trained on the
  caption (labels = caption EOS, padding -100; the model shifts them right behind its start
  token).
Special tokens come from the tokenizer (`videoqf.llm.tokenizer`); the text is tokenized without
the tokenizer's own template, so a BERT-style [CLS] ... [SEP] post-processor adds nothing.

Padded video tokens (video_mask False) are dropped per sample, so every sequence is compact:
[its valid video tokens; its text], padded on the right for training and on the LEFT for
decoder-only generation (the next token is predicted from the last column). Position ids are
cumsum(attention_mask) - 1, the rule transformers' `generate` uses, so training and generation
place the tokens identically.

Instruction-aware option (InstructBLIP, Dai et al., 2023): with `instruction_aware=True` the
bridge hands the resolved prompts back (`instructions_for_qformer`, `BridgeOutput.instructions`)
so the trainer can feed them to the Q-Former's text branch BEFORE the backend runs; the bridge
itself treats the prompt the same either way.

Notation: B batch, M video tokens, H backend width, E LLM embedding width, L sequence length.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from videoqf.llm.config import MAX_NEW_TOKENS, LLMConfig
from videoqf.llm.frozen_lm import FrozenLLM
from videoqf.llm.projector import Projector
from videoqf.llm.text_ids import TextIds
from videoqf.llm.tokenizer import load_tokenizer, special_token_ids


@dataclass
class BridgeOutput:
    """loss: scalar (mean over caption tokens); logits: [B, L, V] (decoder logits for seq2seq);
    labels: [B, L] as given to the LLM; instructions: the prompts when instruction-aware."""

    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor
    instructions: list[str] | None


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """mask: [B, L] -> [B, L], cumsum - 1 with 0 on padding (transformers' generate rule)."""
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)


class VideoLLMBridge(nn.Module):
    """Projector + frozen LLM + tokenizer; the trainable part is the projector."""

    def __init__(
        self,
        *,
        projector: Projector,
        llm: FrozenLLM,
        tokenizer,
        prompt: str = "",
        instruction_aware: bool = False,
        max_text_len: int = 64,
    ) -> None:
        super().__init__()
        self.projector = projector
        self.llm = llm
        self.tokenizer = tokenizer
        self.special = special_token_ids(tokenizer)
        self.prompt = prompt
        self.instruction_aware = instruction_aware
        self.max_text_len = max_text_len
        self._text_ids = TextIds(tokenizer, max_text_len, add_special_tokens=False)
        if len(tokenizer) > llm.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the LLM embeds only {llm.vocab_size}")
        if llm.is_encoder_decoder and llm.model.config.decoder_start_token_id is None:
            raise ValueError("encoder-decoder LLM config has no decoder_start_token_id")

    @classmethod
    def from_config(cls, config: LLMConfig, *, video_dim: int, tokenizer=None,
                    num_tokens: int | None = None) -> "VideoLLMBridge":
        """video_dim: width of the backend's tokens. tokenizer: an already loaded tokenizer, else read from
        config.tokenizer_path or config.path. num_tokens: how many video tokens the backend hands over (the
        "flatten" projector needs it)."""
        if tokenizer is None:
            source = config.tokenizer_path or config.path
            if source is None:
                raise ValueError("LLMConfig built from model_config needs tokenizer_path (or pass tokenizer=)")
            tokenizer = load_tokenizer(source)
        llm = FrozenLLM.from_config(config)
        projector = Projector.from_config(video_dim, llm.embed_dim, config.projector, num_tokens=num_tokens)
        return cls(
            projector=projector,
            llm=llm,
            tokenizer=tokenizer,
            prompt=config.prompt,
            instruction_aware=config.instruction_aware,
            max_text_len=config.max_text_len,
        )

    # -- text ---------------------------------------------------------------------------------
    def resolve_prompts(self, prompts: list[str] | None, batch: int) -> list[str]:
        """The batch's prompts, or the default prompt for every sample."""
        if prompts is None:
            return [self.prompt] * batch
        if len(prompts) != batch:
            raise ValueError(f"got {len(prompts)} prompts for a batch of {batch}")
        return list(prompts)

    def instructions_for_qformer(self, prompts: list[str] | None, batch: int) -> list[str] | None:
        """The instruction text for the Q-Former's text branch when instruction-aware, else None."""
        return self.resolve_prompts(prompts, batch) if self.instruction_aware else None

    def _prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        # As their pre-training did: decoder-only LMs read BOS-started text, T5's encoder reads
        # text closed by EOS (LAVIS gets both from the LLM's own tokenizer).
        if self.llm.is_encoder_decoder:
            return [ids + [self.special.eos] for ids in self._text_ids(prompts)]
        bos = [] if self.special.bos is None else [self.special.bos]
        return [bos + ids for ids in self._text_ids(prompts)]

    # -- assembly -----------------------------------------------------------------------------
    def _assemble(
        self,
        video_tokens: torch.Tensor,
        video_mask: torch.Tensor | None,
        text_ids: list[list[int]],
        text_labels: list[list[int]] | None,
        *,
        padding_side: str,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """[valid video tokens; text] per sample, padded. Returns inputs_embeds [B, L, E],
        attention_mask [B, L] long and labels [B, L] (-100 off the text labels) or None."""
        device = video_tokens.device
        video = self.projector(video_tokens, video_mask).to(self.llm.dtype)
        if video_mask is None or self.projector.mixes_tokens:
            video_mask = torch.ones(video.shape[:2], dtype=torch.bool, device=device)
        seqs, labels = [], []
        for i, ids in enumerate(text_ids):
            valid = video[i][video_mask[i].bool()]
            text = self.llm.embed(torch.tensor(ids, dtype=torch.long, device=device))
            seqs.append(torch.cat([valid, text]))
            if text_labels is not None:
                labels.append(torch.tensor([-100] * len(valid) + text_labels[i], dtype=torch.long, device=device))
        embeds = pad_sequence(seqs, batch_first=True, padding_side=padding_side)
        ones = [torch.ones(len(s), dtype=torch.long, device=device) for s in seqs]
        mask = pad_sequence(ones, batch_first=True, padding_side=padding_side)
        if text_labels is None:
            return embeds, mask, None
        return embeds, mask, pad_sequence(labels, batch_first=True, padding_value=-100, padding_side=padding_side)

    # -- training -----------------------------------------------------------------------------
    def forward(
        self,
        video_tokens: torch.Tensor,
        video_mask: torch.Tensor | None,
        captions: list[str],
        prompts: list[str] | None = None,
    ) -> BridgeOutput:
        """Captioning loss. video_tokens: [B, M, H]; video_mask: [B, M] bool (None: all valid);
        captions: B strings; prompts: B strings or None (the default prompt)."""
        batch = video_tokens.shape[0]
        if len(captions) != batch:
            raise ValueError(f"got {len(captions)} captions for a batch of {batch}")
        prompts = self.resolve_prompts(prompts, batch)
        prompt_ids = self._prompt_ids(prompts)
        caption_ids = [ids + [self.special.eos] for ids in self._text_ids(captions)]
        if self.llm.is_encoder_decoder:
            embeds, mask, _ = self._assemble(video_tokens, video_mask, prompt_ids, None, padding_side="right")
            labels = pad_sequence(
                [torch.tensor(ids, device=embeds.device) for ids in caption_ids],
                batch_first=True,
                padding_value=-100,
            )
            out = self.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels)
        else:
            text_ids = [p + c for p, c in zip(prompt_ids, caption_ids)]
            text_labels = [[-100] * len(p) + c for p, c in zip(prompt_ids, caption_ids)]
            embeds, mask, labels = self._assemble(
                video_tokens, video_mask, text_ids, text_labels, padding_side="right"
            )
            out = self.llm(
                inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_from_mask(mask), labels=labels
            )
        instructions = prompts if self.instruction_aware else None
        return BridgeOutput(loss=out.loss, logits=out.logits, labels=labels, instructions=instructions)

    @torch.no_grad()
    def caption_log_likelihood(
        self,
        video_tokens: torch.Tensor,
        video_mask: torch.Tensor | None,
        captions: list[str],
        prompts: list[str] | None = None,
    ) -> torch.Tensor:
        """[B] summed log-probability of each caption (its EOS included) given its video tokens and prompt:
        the LLM's score of a (caption, video) pair, which hears whatever the video tokens carry, audio too."""
        out = self(video_tokens, video_mask, captions, prompts)
        logits, labels = out.logits, out.labels
        if not self.llm.is_encoder_decoder:  # a decoder-only LM predicts position i + 1 at position i
            logits, labels = logits[:, :-1], labels[:, 1:]
        nll = nn.functional.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=-100, reduction="none")
        return -nll.sum(1)

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        video_tokens: torch.Tensor,
        video_mask: torch.Tensor | None = None,
        prompts: list[str] | None = None,
        *,
        max_new_tokens: int = MAX_NEW_TOKENS,
        num_beams: int = 1,
        do_sample: bool = False,
        top_p: float = 0.9,
        temperature: float = 1.0,
        use_cache: bool = True,
        **generate_kwargs,
    ) -> list[str]:
        """Captions for a batch, through the LLM's `generate` on `inputs_embeds` (greedy by
        default; beam search with num_beams > 1; nucleus sampling with do_sample=True, seeded by
        the caller's torch.manual_seed). Stops at EOS; the text after the first EOS is dropped.
        Other transformers generation keywords (min_new_tokens, length_penalty, ...) pass through."""
        batch = video_tokens.shape[0]
        prompt_ids = self._prompt_ids(self.resolve_prompts(prompts, batch))
        side = "right" if self.llm.is_encoder_decoder else "left"
        embeds, mask, _ = self._assemble(video_tokens, video_mask, prompt_ids, None, padding_side=side)
        sampling = {"top_p": top_p, "temperature": temperature} if do_sample else {}
        out = self.llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=do_sample,
            use_cache=use_cache,
            eos_token_id=self.special.eos,
            pad_token_id=self.special.pad,
            **sampling,
            **generate_kwargs,
        )
        if self.llm.is_encoder_decoder:
            out = out[:, 1:]  # the decoder start token
        return [self._decode(row) for row in out.tolist()]

    def _decode(self, ids: list[int]) -> str:
        if self.special.eos in ids:
            ids = ids[: ids.index(self.special.eos)]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()
