"""The whole video-language model: frozen encoders -> backend -> retrieval heads and frozen LLM.

The model computes, the losses (``videoqf.objectives``) and evaluation read its public passes:
``encode`` (the backend's ``VideoTokens``), ``encode_for_llm`` (what the LLM reads), ``head_text_cls`` /
``head_match_output`` / ``head_generation_logits`` (the head's three text passes), ``text_features`` /
``video_features`` / ``matching_scores`` (retrieval), ``head_captions`` and ``caption`` (generation). A batch
follows ``videoqf.data.batch`` (decoded media or cached features, the same results either way).

What trains is set by ``videoqf.models.groups.lock`` over ``parameter_groups()``, from the stage config.

Instruction-aware option (InstructBLIP, Dai et al., 2023; ``model.llm.instruction_aware``): in the caption
stage and in ``caption`` the prompt (``batch["prompt"]``, else the LLM's default prompt) is tokenized with the
Q-Former's tokenizer and handed to the backend, so the head runs ``[queries; instruction]`` bi-directionally
and the video tokens depend on the instruction. Stage 1 stays instruction-free (BLIP-2's pre-training).

Own head option (``model.llm.own_head``): the LLM reads the queries of ``llm_head``, a copy of the backend's
head made from the stage-1 head when the caption stage starts (``videoqf.recipes.run``); that stage may train
it while the backend's head, which retrieval reads, keeps what stage 1 learned.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from videoqf.backends import VideoTokens, backend_config, build_backend
from videoqf.backends.base import HeadInputs, run_head
from videoqf.data.batch import CACHED_AUDIO, CACHED_AUDIO_MASK, CACHED_FRAMES
from videoqf.llm.bridge import VideoLLMBridge
from videoqf.llm.config import MAX_NEW_TOKENS
from videoqf.llm.tokenizer import text_vocab_size
from videoqf.models.collate import tokenize
from videoqf.models.config import ModelConfig
from videoqf.models.frozen import build_frozen_encoders
from videoqf.models.groups import named_groups
from videoqf.modules.standardize import TokenStandardizer
from videoqf.objectives.vtc import VideoTextContrastive, fill_padded_queries
from videoqf.objectives.vtm import VideoTextMatching
from videoqf.qformer import CrossContext
from videoqf.qformer.masks import encoder_attention_mask


class RetrievalHeads(nn.Module):
    """BLIP-2's retrieval heads over the head Q-Former: VTC's projections and temperature, VTM's matching head."""

    def __init__(self, hidden_size: int, config):
        super().__init__()
        self.vtc = VideoTextContrastive.from_config(hidden_size, config)
        self.vtm = VideoTextMatching(hidden_size)


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
        if vision is not None:
            self.vision, self.audio = vision, None
        else:
            self.vision, self.audio = build_frozen_encoders(config) if encoders else (None, None)
        self.backend = build_backend(config.variant, backend_config(config.variant, config.backend,
                                                                    preset=config.preset))
        head_vocab = self.backend.head.config.vocab_size
        text_vocab = None if tokenizer is None else text_vocab_size(tokenizer)
        if text_vocab is not None and text_vocab > head_vocab:
            raise ValueError(f"the tokenizer has {text_vocab} tokens but the head Q-Former's vocab_size is "
                             f"{head_vocab}: raise model.backend.<head qformer>.vocab_size")
        if tokenizer is not None and tokenizer.bos_token_id is None:
            raise ValueError("the tokenizer has no BOS token, which VTG decodes from")
        self.bos_token_id = None if tokenizer is None else tokenizer.bos_token_id
        self.retrieval_heads = RetrievalHeads(self.backend.hidden_size, config.objectives)
        if bridge is None and config.llm is not None:
            if llm_tokenizer is None and config.llm.tokenizer_path is None:
                llm_tokenizer = tokenizer
            bridge = VideoLLMBridge.from_config(config.llm, tokenizer=llm_tokenizer, video_dim=self.backend.hidden_size,
                                                num_tokens=self._fixed_token_count())
        self.bridge = bridge
        self.llm_head = copy.deepcopy(self.backend.head) if config.llm is not None and config.llm.own_head else None
        if self.llm_head is not None:
            if not self.backend.tokens_are_head_pass:
                raise ValueError(f"model.llm.own_head: the {config.variant!r} backend's tokens are not one pass of "
                                 "its head, so a copy of the head cannot stand in for it")
        self.vision_norm = self.audio_norm = None
        if config.standardize_features:
            if self.vision is None:
                raise ValueError("model.standardize_features needs the encoders' token shapes: build with encoders")
            self.vision_norm = TokenStandardizer(self.vision.num_tokens, self.vision.output_dim)
            if self.audio is not None:
                self.audio_norm = TokenStandardizer(self.audio.num_tokens, self.audio.output_dim)
        # what no stage may train: the frozen encoders, the LLM, a fixed temperature
        self.fixed_parameters = frozenset(n for n, p in self.named_parameters() if not p.requires_grad)
        self.frozen_modules: list[nn.Module] = []

    def _fixed_token_count(self) -> int | None:
        """How many tokens the backend hands the LLM, for a projector that needs it (else None)."""
        if self.config.llm.projector.kind != "flatten":
            return None
        counts = {self.backend.num_output_tokens(n, audio=self.config.use_audio) for n in (1, 2)}
        if len(counts) > 1:
            raise ValueError(f"model.llm.projector.kind='flatten' needs a fixed number of video tokens, but the "
                             f"{self.config.variant!r} backend hands the LLM a number that grows with the frames")
        return counts.pop()

    def parameter_groups(self) -> dict[str, list[nn.Module]]:
        """The trainable parts by role (``videoqf.models.groups``); a part this model lacks has no entry."""
        return named_groups(self.backend, self.retrieval_heads, None if self.bridge is None else self.bridge.projector,
                            self.llm_head)

    def train(self, mode: bool = True) -> "VideoLanguageModel":
        super().train(mode)
        for module in self.frozen_modules:  # frozen means eval mode too (no dropout)
            module.eval()
        return self

    def copy_head_for_llm(self) -> None:
        """Start the LLM's own head (``model.llm.own_head``) from the backend's head as it is now."""
        if self.llm_head is None:
            raise ValueError("this model has no head of the LLM's own: set model.llm.own_head")
        self.llm_head.load_state_dict(self.backend.head.state_dict())

    # -- features --------------------------------------------------------------------------------
    def raw_frame_features(self, batch: dict) -> torch.Tensor:
        """[B, T, N, Dv] from the cache's ``frame_features`` or the frozen vision encoder on ``frames``."""
        if CACHED_FRAMES in batch:
            return batch[CACHED_FRAMES]
        if self.vision is None:
            raise ValueError(f"this model was built without encoders: the batch must bring cached {CACHED_FRAMES!r}")
        return self.vision(batch["frames"])

    def raw_audio_features(self, batch: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Audio tokens [B, S, Na, Da] and segment mask [B, S] (cache or frozen audio encoder), or None."""
        if not self.config.use_audio:
            return None, None
        if CACHED_AUDIO in batch:
            return batch[CACHED_AUDIO], batch[CACHED_AUDIO_MASK]
        if self.audio is None:
            return None, None
        batch_size = batch["frame_mask"].shape[0]
        return self.audio(batch.get("audio"), batch.get("audio_mask"), batch_size=batch_size)

    def _backend_dtype(self) -> torch.dtype:
        return next(self.backend.parameters()).dtype

    def frame_features(self, batch: dict) -> torch.Tensor:
        """The frame features the backend reads, in its dtype (standardised when ``model.standardize_features``):
        frozen encoders in half precision beside an fp32 backend ("auto" on a GPU) hand over here."""
        features = self.raw_frame_features(batch).to(self._backend_dtype())
        return features if self.vision_norm is None else self.vision_norm(features)

    def audio_features(self, batch: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        tokens, mask = self.raw_audio_features(batch)
        if tokens is None:
            return tokens, mask
        tokens = tokens.to(self._backend_dtype())
        return (tokens if self.audio_norm is None else self.audio_norm(tokens)), mask

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

    def head_inputs(self, batch: dict) -> HeadInputs:
        """What the backend's head cross-attends to for ``batch`` (``VideoBackend.head_inputs``)."""
        return self.backend.head_inputs(self.frame_features(batch), batch["frame_mask"])

    def encode_for_llm(self, batch: dict, prompts: list[str] | None, *, encoded: VideoTokens | None = None,
                       head_inputs: HeadInputs | None = None) -> VideoTokens:
        """The tokens the LLM reads: instructed by ``prompts`` (None: the default prompt) when the model is
        instruction-aware, else the plain ``encode`` (``encoded``, when the caller has it). With
        ``model.llm.own_head`` the head's queries come from the LLM's own head, which reads the backend's head
        inputs (``head_inputs``, when the caller has them) and the backend's side tokens, never its head pass."""
        batch_size = batch["frame_mask"].shape[0]
        instructions = self.bridge.instructions_for_qformer(prompts, batch_size)
        if self.llm_head is None:
            return encoded if encoded is not None and instructions is None else self.encode(batch, instructions)
        if encoded is None and self.backend.splits_at_head:
            inputs = head_inputs if head_inputs is not None else self.head_inputs(batch)
            side = self.backend.side_tokens(*self.audio_features(batch))
            dtype = self.llm_head.cross_kv.weight.dtype
            context = CrossContext(kv=None, mask=encoder_attention_mask(inputs.mask), tokens=inputs.tokens.to(dtype),
                                   time=None if inputs.time is None else inputs.time.to(dtype))
            weights = inputs.frame_weights
        else:
            vt = encoded if encoded is not None else self.encode(batch, instructions)
            if vt.context.tokens is None:
                raise ValueError(f"model.llm.own_head: the {self.config.variant!r} backend's context keeps no "
                                 "encoder tokens for the LLM's head to read")
            context = CrossContext(kv=None, mask=vt.context.mask, tokens=vt.context.tokens, time=vt.context.time)
            side = (vt.tokens[:, vt.head_queries:], vt.mask[:, vt.head_queries:])
            weights = vt.frame_weights
        # kv=None: its own key / value projections, so gradients stop at the context's tokens
        queries, _ = run_head(self.llm_head, context, *self._instruction_ids(instructions, context.tokens.device))
        tokens, mask = queries, torch.ones(queries.shape[:2], dtype=torch.bool, device=queries.device)
        if side is not None:
            tokens, mask = torch.cat([queries, side[0]], dim=1), torch.cat([mask, side[1].bool()], dim=1)
        return VideoTokens(tokens=tokens, mask=mask, context=context, head_queries=queries.shape[1],
                           frame_weights=weights)

    # -- the head's text passes (the stage-1 losses and retrieval read these) -----------------------
    def head_text_cls(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """[B, L] ids -> [B, H]: the text's first token from a text-only pass of the head."""
        return self.backend.head(text_ids=text_ids, text_mask=text_mask).text_output[:, 0]

    def head_match_output(self, context: CrossContext, text_ids: torch.Tensor, text_mask: torch.Tensor
                          ) -> torch.Tensor:
        """[B, Q, H] query outputs of the head over ``[queries; text]``, bi-directionally, on ``context``."""
        return self.backend.head(context=context, text_ids=text_ids, text_mask=text_mask,
                                 mode="bidirectional").query_output

    def head_generation_logits(self, vt: VideoTokens, decoder_ids: torch.Tensor, text_mask: torch.Tensor
                               ) -> torch.Tensor:
        """[B, L, V] logits of the head decoding ``decoder_ids`` causally while seeing all queries (VTG); the
        queries' keys/values come from the query pass's cache when the backend kept one."""
        head = self.backend.head
        if vt.query_cache is not None:
            out = head(text_ids=decoder_ids, text_mask=text_mask, mode="causal", past_key_values=vt.query_cache)
        else:
            out = head(context=vt.context, text_ids=decoder_ids, text_mask=text_mask, mode="causal")
        return head.lm_logits(out.text_output)

    # -- retrieval -------------------------------------------------------------------------------
    def text_features(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """[B, L] ids -> [B, D] unit-norm contrastive text embeddings."""
        return self.retrieval_heads.vtc.embed_text(self.head_text_cls(text_ids, text_mask))

    def video_features(self, vt: VideoTokens) -> torch.Tensor:
        """[B, Q, D] unit-norm contrastive video embeddings (one per head query; a padded query repeats the
        clip's first real one, so a max over queries sees real ones only)."""
        features = self.retrieval_heads.vtc.embed_video(vt.contrastive_tokens)
        return fill_padded_queries(features, vt.contrastive_mask)

    def matching_scores(self, context: CrossContext, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Probability that each (video, text) row pair matches: [B]."""
        logits = self.retrieval_heads.vtm.logits(self.head_match_output(context, text_ids, text_mask))
        return logits.softmax(-1)[:, 1]

    # -- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def head_captions(self, vt: VideoTokens, *, eos_token_id: int, pad_token_id: int,
                      max_new_tokens: int = MAX_NEW_TOKENS) -> torch.Tensor:
        """Greedy VTG decoding by the head alone (BLIP-2's ITG branch as a captioner): [B, <= max_new_tokens]
        ids after BOS, ``pad_token_id`` once a row has produced ``eos_token_id``. It says how much of the
        caption stage 1 grounds in the video before any LLM is involved."""
        head = self.backend.head
        batch = vt.tokens.shape[0]
        ids = torch.full((batch, 1), self.bos_token_id, dtype=torch.long, device=vt.tokens.device)
        cache, step_ids = vt.query_cache, ids
        done = torch.zeros(batch, dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            if cache is not None:  # the queries' (and earlier text's) keys/values are reused
                out = head(text_ids=step_ids, mode="causal", past_key_values=cache, use_cache=True)
                cache = out.past_key_values
            else:  # no query cache (an instructed head, framewise, meanpool): rerun the whole prefix
                out = head(context=vt.context, text_ids=ids, mode="causal")
            step_ids = head.lm_logits(out.text_output[:, -1:]).argmax(-1).masked_fill(done[:, None], pad_token_id)
            ids = torch.cat([ids, step_ids], dim=1)
            done |= step_ids[:, 0] == eos_token_id
            if done.all():
                break
        return ids[:, 1:]

    def save_pretrained(self, directory) -> None:
        """The whole model in this project's format (``videoqf.pretrained.save``; ``load_pretrained`` reads it)."""
        from videoqf.pretrained.save import save_pretrained

        save_pretrained(self, directory)

    def export_hf(self, directory, *, video: bool = False):
        """This image or framewise model as a transformers Blip2 / InstructBlip(Video) folder
        (``videoqf.pretrained.export``); returns the folder."""
        from videoqf.pretrained.export import export_hf

        return export_hf(self, directory, video=video)

    @torch.no_grad()
    def caption(self, batch: dict, prompts: list[str] | None = None, **generate_kwargs) -> list[str]:
        """Captions from the frozen LLM for a batch of clips. prompts: B strings, else the batch's ``prompt``,
        else the default prompt; ``generate_kwargs`` are transformers' generation keywords."""
        if self.bridge is None:
            raise ValueError("captioning needs model.llm")
        prompts = prompts if prompts is not None else batch.get("prompt")
        vt = self.encode_for_llm(batch, prompts)
        return self.bridge.generate(vt.tokens, vt.mask, prompts, **generate_kwargs)
