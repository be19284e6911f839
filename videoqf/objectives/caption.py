"""The caption stage's loss: the frozen LLM's captioning loss on the projected video tokens (BLIP-2's second
stage; InstructBLIP's instruction tuning when the batch brings prompts)."""
from __future__ import annotations

from torch import nn

from videoqf.models.head_inputs_memo import HeadInputsMemo


class CaptionLoss(nn.Module):
    """``forward(model, batch)`` -> ``{"loss", "logs", "query_output"}``; batch: ``caption`` (B strings) and
    optional ``prompt`` (B strings) beside the media. The LLM's own head (``model.llm.own_head``) reads the
    backend's head inputs, kept per training item while nothing that makes them trains (``HeadInputsMemo``)."""

    def __init__(self):
        super().__init__()
        self.memo = HeadInputsMemo()

    def forward(self, model, batch: dict) -> dict:
        prompts = batch.get("prompt")
        inputs = self.memo(model, batch) if model.llm_head is not None and model.backend.splits_at_head else None
        vt = model.encode_for_llm(batch, prompts, head_inputs=inputs)
        lm = model.bridge(vt.tokens, vt.mask, batch["caption"], prompts)
        return {"loss": lm.loss, "logs": {"lm": lm.loss.detach()}, "query_output": vt.contrastive_tokens.detach()}
