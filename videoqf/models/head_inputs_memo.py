"""The backend's head inputs of each training item, kept across epochs while nothing that makes them trains.

A caption stage that trains only what reads them (the projector, the top layer of the LLM's own head, the audio
branch) would otherwise run the frozen frame Q-Former over every clip in every epoch. ``HeadInputsMemo`` keeps
each item's ``HeadInputs`` the first time it is seen and hands them back after. It keeps them only when that
cannot change a result:
- the batch brings cached features (decoded video may be sampled afresh each epoch);
- the inputs need no gradient (no trainable parameter made them) and come out the same when made twice from
  the first batch (no dropout or other randomness on the way);
- every item's inputs have one shape (clips of one frame count), so that any batch of them stacks;
- the kept rows stay within ``max_bytes`` (in host memory, so a GPU run's memory is left alone); items past
  it are made each time.
One memo serves one stage of one run (``CaptionLoss`` holds it), in training mode only: evaluation batches number
their items in another dataset.
"""
from __future__ import annotations

import torch

from videoqf.backends.base import HeadInputs
from videoqf.data.batch import CACHED_FRAMES

MAX_BYTES = 2 << 30


def _tensors(inputs: HeadInputs) -> list[torch.Tensor | None]:
    return [inputs.tokens, inputs.mask, inputs.time, inputs.frame_weights]


def _stack(rows: list[list[torch.Tensor | None]], device: torch.device) -> HeadInputs:
    return HeadInputs(*(None if column[0] is None else torch.stack(column).to(device) for column in zip(*rows)))


class HeadInputsMemo:
    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self.rows: dict[tuple[str, int], list[torch.Tensor | None]] = {}
        self.bytes = 0
        self.usable: bool | None = None  # decided on the first training batch

    def __call__(self, model, batch: dict) -> HeadInputs:
        if not model.training or CACHED_FRAMES not in batch or self.usable is False:
            return model.head_inputs(batch)
        keys = list(zip(batch["path"], batch["index"].tolist()))
        if self.rows and all(key in self.rows for key in keys):
            return _stack([self.rows[key] for key in keys], batch["frame_mask"].device)
        inputs = model.head_inputs(batch)
        if self.usable is None:
            self.usable = self._fixed(inputs, model.head_inputs(batch))
        if self.usable:
            self._keep(keys, inputs)
        return inputs

    @staticmethod
    def _fixed(inputs: HeadInputs, again: HeadInputs) -> bool:
        pairs = [(a, b) for a, b in zip(_tensors(inputs), _tensors(again)) if a is not None]
        return all(not a.requires_grad and torch.equal(a, b) for a, b in pairs)

    def _keep(self, keys: list[tuple[str, int]], inputs: HeadInputs) -> None:
        columns = _tensors(inputs)
        shapes = [None if t is None else t.shape[1:] for t in columns]
        if self.rows:
            kept = next(iter(self.rows.values()))
            if shapes != [None if t is None else t.shape for t in kept]:
                self.usable, self.rows, self.bytes = False, {}, 0  # clips of other frame counts: stop keeping
                return
        row_bytes = sum(t[0].numel() * t.element_size() for t in columns if t is not None)
        for i, key in enumerate(keys):
            if key not in self.rows and self.bytes + row_bytes <= self.max_bytes:
                self.rows[key] = [None if t is None else t[i].to("cpu", copy=True) for t in columns]
                self.bytes += row_bytes
