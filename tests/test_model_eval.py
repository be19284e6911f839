"""Joining the evaluation's per-batch pieces (``videoqf.eval.model_eval``)."""
import torch

from videoqf.eval.model_eval import concat_contexts
from videoqf.qformer import CrossContext


def _context(batch: int, tokens: int, *, masked: bool, device: str = "cpu") -> CrossContext:
    kv = [(torch.randn(batch, 2, tokens, 4, device=device), torch.randn(batch, 2, tokens, 4, device=device))]
    mask = torch.arange(tokens, device=device).expand(batch, 1, 1, tokens) < tokens - 1 if masked else None
    return CrossContext(kv=kv, mask=mask)


def test_contexts_with_and_without_masks_join_with_every_token_of_the_unmasked_ones_kept():
    plain, masked = _context(2, 5, masked=False), _context(3, 5, masked=True)
    joined = concat_contexts([plain, masked])
    assert torch.equal(joined.kv[0][0], torch.cat([plain.kv[0][0], masked.kv[0][0]]))
    assert joined.mask.shape == (5, 1, 1, 5)
    assert joined.mask[:2].all() and torch.equal(joined.mask[2:], masked.mask)
    assert concat_contexts([plain, plain]).mask is None


def test_contexts_join_on_their_own_device():
    # a GPU run's contexts are on the GPU: the mask made for an unmasked batch must be too (meta stands for it)
    joined = concat_contexts([_context(2, 5, masked=False, device="meta"), _context(3, 5, masked=True, device="meta")])
    assert joined.mask.device.type == "meta" and joined.mask.shape == (5, 1, 1, 5)
