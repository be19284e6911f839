"""The frozen LLM of stage 2 (BLIP-2, Li et al., 2023): built locally, frozen, gradients to its inputs.

Decoder-only models go through transformers' `AutoModelForCausalLM` (BLIP-2's OPT), encoder-
decoders through `AutoModelForSeq2SeqLM` (BLIP-2's Flan-T5). Weights come from a LOCAL directory
(`from_pretrained(dir, local_files_only=True)`) or a config (`AutoConfig.for_model`, random
weights: tests); never the hub. Frozen means eval mode and requires_grad=False on every weight;
it is NOT run under no_grad, so the loss still differentiates w.r.t. `inputs_embeds`, which is
how the projector and the video backend train.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, PreTrainedModel

from videoqf.llm.config import LLMConfig

_AUTO_CLASSES = {"causal": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM}


def build_language_model(config: LLMConfig) -> PreTrainedModel:
    """The LLM named by `config` (local directory or config dict), not yet frozen."""
    auto = _AUTO_CLASSES[config.arch]
    if config.path is not None:
        path = Path(config.path)
        if not path.is_dir():
            raise FileNotFoundError(f"LLM directory {path} does not exist (LLMConfig.path; the hub is never used)")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"LLM directory {path} has no config.json: not a save_pretrained output")
        return auto.from_pretrained(str(path), local_files_only=True)
    model_config = dict(config.model_config)
    return auto.from_config(AutoConfig.for_model(model_config.pop("model_type"), **model_config))


class FrozenLLM(nn.Module):
    """Wraps a transformers LM; `forward` and `generate` pass through to it."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.model.requires_grad_(False)
        self.model.eval()

    @classmethod
    def from_config(cls, config: LLMConfig) -> "FrozenLLM":
        return cls(build_language_model(config))

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(self.model.config.is_encoder_decoder)

    @property
    def embed_dim(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def vocab_size(self) -> int:
        return self.model.get_input_embeddings().num_embeddings

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: [B, L] -> token embeddings [B, L, E]."""
        return self.model.get_input_embeddings()(ids)

    def train(self, mode: bool = True) -> "FrozenLLM":
        # The parent's train() reaches us through Module.train; dropout must stay off.
        return super().train(False)

    def forward(self, **inputs):
        return self.model(**inputs)

    def generate(self, **inputs) -> torch.Tensor:
        return self.model.generate(**inputs)
