"""The whole video-language model: frozen encoders -> backend -> stage-1 objectives or frozen LLM.

``VideoLanguageModel(batch)`` returns ``{"loss", "logs", "query_output"}`` (what ``videoqf.train``
expects). ``stage`` selects the objective: 1 trains the backend with VTC / VTM / VTG; 2 trains the
backend and the projector through the frozen LLM's captioning loss (BLIP-2's second stage). A batch
brings either decoded ``frames`` (the frozen encoders run here, under no_grad) or cached encoder
outputs ``features`` / ``audio_tokens`` (``videoqf.data.feature_cache``), with the same results.

Instruction-aware option (InstructBLIP, Dai et al., 2023; ``model.llm.instruction_aware``): in stage 2
and in ``caption`` the prompt (``batch["prompt"]``, else the LLM's default prompt) is tokenized with the
model's tokenizer and handed to the backend as ``text_ids`` / ``text_mask``, so the head runs
``[queries; instruction]`` bi-directionally and the video tokens depend on the instruction. Stage 1
stays instruction-free (BLIP-2's pre-training, as InstructBLIP starts from it).

Own head option (``model.llm.own_head``): the LLM reads the queries of ``llm_head``, a copy of the backend's
head made from the stage-1 head when stage 2 starts (``videoqf.recipes.run``); stage 2 may train it while the
backend's head, which retrieval reads, keeps what stage 1 learned.
"""
from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from videoqf.backends import VideoTokens, backend_config, build_backend
from videoqf.backends.base import run_head
from videoqf.llm.bridge import VideoLLMBridge
from videoqf.models.collate import tokenize
from videoqf.models.config import ModelConfig
from videoqf.models.frozen import build_frozen_encoders
from videoqf.models.stage1 import Stage1Objectives
from videoqf.modules.standardize import TokenStandardizer
from videoqf.qformer import CrossContext


class VideoLanguageModel(nn.Module):
    """tokenizer: the Q-Former's text tokenizer (stage 1, instructions), or None for a model that only
    captions without instructions (a released BLIP-2 folder brings none). The LLM reads its own tokenizer:
    ``llm_tokenizer``, else ``model.llm.tokenizer_path``, else (the synthetic default) ``tokenizer``.
    vision / bridge: parts built elsewhere (``videoqf.pretrained``: a released checkpoint's vision tower and
    LLM) instead of from ``config.vision`` / ``config.llm``."""

    def __init__(self, config: ModelConfig, tokenizer, *, encoders: bool = True, llm_tokenizer=None,
                 vision: nn.Module | None = None, bridge: VideoLLMBridge | None = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.stage = 1
        if vision is not None:
            self.vision, self.audio = vision, None
        else:
            self.vision, self.audio = build_frozen_encoders(config) if encoders else (None, None)
        self.backend = build_backend(config.variant, backend_config(config.variant, config.backend,
                                                                    preset=config.preset))
        head_vocab = self.backend.head.config.vocab_size
        if tokenizer is not None and len(tokenizer) > head_vocab:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the head Q-Former's vocab_size is "
                             f"{head_vocab}: raise model.backend.<head qformer>.vocab_size")
        if tokenizer is not None and tokenizer.bos_token_id is None:
            raise ValueError("the tokenizer has no BOS token, which VTG decodes from")
        self.stage1 = Stage1Objectives(self.backend.hidden_size, config.objectives,
                                       bos_token_id=None if tokenizer is None else tokenizer.bos_token_id)
        if bridge is None and config.llm is not None:
            if llm_tokenizer is None and config.llm.tokenizer_path is None:
                llm_tokenizer = tokenizer
            bridge = VideoLLMBridge.from_config(config.llm, tokenizer=llm_tokenizer,
                                                num_tokens=self._fixed_token_count())
        self.bridge = bridge
        self.llm_head = copy.deepcopy(self.backend.head) if config.llm is not None and config.llm.own_head else None
        if self.llm_head is not None:
            if not self.backend.tokens_are_head_pass:
                raise ValueError(f"model.llm.own_head: the {config.variant!r} backend's tokens are not one pass of "
                                 "its head, so a copy of the head cannot stand in for it")
            self.llm_head.requires_grad_(False)
        self.vision_norm = self.audio_norm = None
        if config.standardize_features:
            if self.vision is None:
                raise ValueError("model.standardize_features needs the encoders' token shapes: build with encoders")
            self.vision_norm = TokenStandardizer(self.vision.num_tokens, self.vision.output_dim)
            if self.audio is not None:
                self.audio_norm = TokenStandardizer(self.audio.num_tokens, self.audio.output_dim)

    def _fixed_token_count(self) -> int | None:
        """How many tokens the backend hands the LLM, for a projector that needs it (else None)."""
        if self.config.llm.projector.kind != "flatten":
            return None
        counts = {self.backend.num_output_tokens(n, audio=self.config.use_audio) for n in (1, 2)}
        if len(counts) > 1:
            raise ValueError(f"model.llm.projector.kind='flatten' needs a fixed number of video tokens, but the "
                             f"{self.config.variant!r} backend hands the LLM a number that grows with the frames")
        return counts.pop()

    def set_stage(self, stage: int) -> None:
        """Select the objective and what is trainable: stage 1 trains the backend and the stage-1 heads,
        stage 2 the backend, the projector and the LLM's own head when there is one (the LLM and the encoders
        stay frozen throughout)."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        if stage == 2 and self.bridge is None:
            raise ValueError("stage 2 needs model.llm (a local LLM directory or config)")
        if stage == 1 and self.tokenizer is None:
            raise ValueError("stage 1 needs the Q-Former's text tokenizer (model.tokenizer)")
        self.stage = stage
        for p in self.stage1.parameters():
            p.requires_grad_(stage == 1)
        if self.bridge is not None:
            for p in self.bridge.projector.parameters():
                p.requires_grad_(stage == 2)
        if self.llm_head is not None:
            self.llm_head.requires_grad_(stage == 2)

    def copy_head_for_llm(self) -> None:
        """Start the LLM's own head (``model.llm.own_head``) from the backend's head as it is now."""
        if self.llm_head is None:
            raise ValueError("this model has no head of the LLM's own: set model.llm.own_head")
        self.llm_head.load_state_dict(self.backend.head.state_dict())

    # -- features --------------------------------------------------------------------------------
    def raw_frame_features(self, batch: dict) -> torch.Tensor:
        """[B, T, N, Dv] from ``batch["features"]`` (cache) or the frozen vision encoder on ``frames``."""
        if "features" in batch:
            return batch["features"]
        if self.vision is None:
            raise ValueError("this model was built without encoders: the batch must bring cached 'features'")
        return self.vision(batch["frames"])

    def raw_audio_features(self, batch: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Audio tokens [B, S, Na, Da] and segment mask [B, S] (cache or frozen audio encoder), or None."""
        if not self.config.use_audio:
            return None, None
        if "audio_tokens" in batch:
            return batch["audio_tokens"], batch["audio_segment_mask"]
        if self.audio is None:
            return None, None
        batch_size = batch["frame_mask"].shape[0]
        return self.audio(batch.get("audio"), batch.get("audio_mask"), batch_size=batch_size)

    def frame_features(self, batch: dict) -> torch.Tensor:
        """The frame features the backend reads (standardised when ``model.standardize_features``)."""
        features = self.raw_frame_features(batch)
        return features if self.vision_norm is None else self.vision_norm(features)

    def audio_features(self, batch: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        tokens, mask = self.raw_audio_features(batch)
        if tokens is None or self.audio_norm is None:
            return tokens, mask
        return self.audio_norm(tokens), mask

    @torch.no_grad()
    def fit_feature_statistics(self, batches) -> None:
        """Fit the standardisers on training ``batches`` (frames or cached features) in one pass; a no-op
        when off."""
        if self.vision_norm is None:
            return
        vision = self.vision_norm.moments()
        audio = self.audio_norm.moments() if self.audio_norm is not None else None
        for batch in batches:
            vision.add(self.raw_frame_features(batch), batch["frame_mask"])
            if audio is not None:
                tokens, mask = self.raw_audio_features(batch)
                if tokens is not None:
                    audio.add(tokens, mask)
        self.vision_norm.set_statistics(vision)
        if audio is not None:
            self.audio_norm.set_statistics(audio)

    def _instruction_ids(self, instructions: list[str] | None, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if instructions is None:
            return None, None
        if self.tokenizer is None:
            raise ValueError("instructions need the Q-Former's text tokenizer, and this model has none")
        ids, mask = tokenize(self.tokenizer, instructions, self.config.max_text_len)
        return ids.to(device), mask.to(device)

    def encode(self, batch: dict, instructions: list[str] | None = None, *, audio: bool = True) -> VideoTokens:
        """The backend's tokens; ``instructions`` (B strings) go to the head's text branch when given;
        ``audio=False`` leaves the audio branch out (its tokens would follow the head's)."""
        audio_tokens, audio_mask = self.audio_features(batch) if audio else (None, None)
        text_ids, text_mask = self._instruction_ids(instructions, batch["frame_mask"].device)
        return self.backend(self.frame_features(batch), batch["frame_mask"], audio_tokens=audio_tokens,
                            audio_mask=audio_mask, text_ids=text_ids, text_mask=text_mask)

    def encode_for_llm(self, batch: dict, prompts: list[str] | None, *, encoded: VideoTokens | None = None
                       ) -> VideoTokens:
        """The tokens the LLM reads: instructed by ``prompts`` (None: the default prompt) when the model is
        instruction-aware, else the plain ``encode`` (``encoded``, when the caller has it); the head's queries
        come from the LLM's own head when ``model.llm.own_head``."""
        batch_size = batch["frame_mask"].shape[0]
        instructions = self.bridge.instructions_for_qformer(prompts, batch_size)
        vt = encoded if encoded is not None and instructions is None else self.encode(batch, instructions)
        if self.llm_head is None:
            return vt
        if vt.context.tokens is None:
            raise ValueError(f"model.llm.own_head: the {self.config.variant!r} backend's context keeps no encoder "
                             "tokens for the LLM's head to read")
        # its own key / value projections: gradients stop at the context's tokens, not in the backend's head
        context = CrossContext(kv=None, mask=vt.context.mask, tokens=vt.context.tokens)
        queries, _ = run_head(self.llm_head, context, *self._instruction_ids(instructions, vt.tokens.device))
        return replace(vt, tokens=torch.cat([queries, vt.tokens[:, vt.head_queries:]], dim=1), query_cache=None)

    # -- training --------------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict:
        if self.stage == 1:  # the losses read the head's queries alone, so the audio branch would run for nothing
            vt = self.encode(batch, audio=False)
            out = self.stage1(self.backend, vt, batch["text_ids"], batch["text_mask"], batch["video_id"])
        else:
            vt = self.encode_for_llm(batch, batch.get("prompt"))
            lm = self.bridge(vt.tokens, vt.mask, batch["caption"], batch.get("prompt"))
            out = {"loss": lm.loss, "logs": {"lm": lm.loss.detach()}}
        out["query_output"] = vt.contrastive_tokens.detach()
        return out

    def save_pretrained(self, directory) -> None:
        """The whole model in this project's format (``videoqf.pretrained.save``; ``load_pretrained`` reads it)."""
        from videoqf.pretrained.save import save_pretrained

        save_pretrained(self, directory)

    @torch.no_grad()
    def caption(self, batch: dict, prompts: list[str] | None = None, **generate_kwargs) -> list[str]:
        """Captions from the frozen LLM for a batch of clips (stage 2). prompts: B strings, else the
        batch's ``prompt``, else the default prompt."""
        if self.bridge is None:
            raise ValueError("captioning needs model.llm")
        prompts = prompts if prompts is not None else batch.get("prompt")
        vt = self.encode_for_llm(batch, prompts)
        return self.bridge.generate(vt.tokens, vt.mask, prompts, **generate_kwargs)
