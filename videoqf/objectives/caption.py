"""The caption stage's loss: the frozen LLM's captioning loss on the projected video tokens (BLIP-2's second
stage; InstructBLIP's instruction tuning when the batch brings prompts)."""
from __future__ import annotations

from torch import nn


class CaptionLoss(nn.Module):
    """``forward(model, batch)`` -> ``{"loss", "logs", "query_output"}``; batch: ``caption`` (B strings) and
    optional ``prompt`` (B strings) beside the media."""

    def forward(self, model, batch: dict) -> dict:
        prompts = batch.get("prompt")
        vt = model.encode_for_llm(batch, prompts)
        lm = model.bridge(vt.tokens, vt.mask, batch["caption"], prompts)
        return {"loss": lm.loss, "logs": {"lm": lm.loss.detach()}, "query_output": vt.contrastive_tokens.detach()}
