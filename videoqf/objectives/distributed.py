"""Rank helpers and an autograd-aware all-gather for the stage-1 losses.

Only the objectives (and the trainer) know about ranks. The gather follows open_clip's
`gather_features(..., gather_with_grad=True)` and BLIP-2's `all_gather_with_grad`, but uses
torch's own differentiable collective (`torch.distributed.nn.functional.all_gather`), whose
backward SUMS the incoming gradients of every rank into the local slice.

torch's backward hands the per-rank gradients to the collective as they come, and on gloo (the
AlltoAll path) a non-contiguous gradient, e.g. the transpose an einsum produces, is exchanged
as garbage (checked with torch 2.14). `_ContiguousGrad` sits after the gather so the collective
only ever sees contiguous gradients; `tests/test_distributed_vtc.py` fails without it.

At world size 1, or when torch.distributed is not initialised, every function here is the
identity, so the same loss code runs in a single process and under DDP / DeepSpeed.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F

from videoqf.qformer import CrossContext


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous (see the module docstring)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def is_distributed() -> bool:
    """True when a process group with more than one rank is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of ranks (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def gather_cat(tensor: torch.Tensor, *, with_grad: bool = True) -> torch.Tensor:
    """Concatenate `tensor` from every rank along dim 0, in rank order.

    tensor: [B, ...] (the same B on every rank) -> [world_size * B, ...].

    with_grad=True keeps the graph: the backward of rank r's slice receives the sum over all
    ranks of the gradients that reached it. with_grad=False is a plain gather (ids, labels,
    tensors used only for sampling); the local slice is put back so that it still carries the
    local graph, as in BLIP-2's `concat_all_gather` callers.
    """
    if not is_distributed():
        return tensor
    if with_grad:
        return torch.cat([_ContiguousGrad.apply(part) for part in dist_fn.all_gather(tensor)], dim=0)
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    parts[dist.get_rank()] = tensor
    return torch.cat(parts, dim=0)


def gather_texts(text_ids: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's token ids / padding masks [B, L_r] -> [world_size * B, max_r L_r], in rank order.

    Each rank pads its captions to its own batch's longest, so the shorter ones are padded on the right
    (id 0, masked) to the longest before the gather; a masked position changes no unmasked output.
    """
    if not is_distributed():
        return text_ids, text_mask
    length = torch.tensor([text_ids.shape[1]], device=text_ids.device)
    dist.all_reduce(length, op=dist.ReduceOp.MAX)
    pad = (0, int(length) - text_ids.shape[1])
    return gather_cat(F.pad(text_ids, pad), with_grad=False), gather_cat(F.pad(text_mask, pad), with_grad=False)


def gather_context(context: CrossContext) -> CrossContext:
    """Every rank's cross-attention keys/values (with gradient), so VTM can pair across the global batch."""
    if get_world_size() == 1:
        return context
    def gather_kv(kv):
        return None if kv is None else [(gather_cat(k), gather_cat(v)) for k, v in kv]

    mask = None if context.mask is None else gather_cat(context.mask, with_grad=False)
    time = None if context.time is None else gather_cat(context.time)
    return CrossContext(kv=gather_kv(context.kv), mask=mask, time=time, time_kv=gather_kv(context.time_kv))
