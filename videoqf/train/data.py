"""Resumable, sharded data order and the micro-batch stream the trainer draws from.

Epoch ``e`` visits ``torch.randperm(N, generator=seed_of(seed, e))`` (tail dropped so every rank gets
the same count); rank ``r`` of ``W`` takes positions ``r, r + W, r + 2W, ...`` so ``W`` ranks with micro
batch ``m`` see, step for step, the same samples as one rank with micro batch ``W * m``. Each sample's
own randomness (augmentation, frame sampling) is seeded from ``(seed, epoch, global position)``, so it
does not depend on the number of ranks or workers, nor on where a run was resumed. A dataset with
``set_epoch`` (a caption drawn per epoch, ...) is told the epoch before each epoch's loader starts its
workers, a resumed stream included. A resumed stream starts at a saved position and never loads the
samples before it.
Reference: ``torch.utils.data.DistributedSampler`` (same interleaved sharding), made resumable.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from videoqf.train.checkpoint import isolated_rng


def _seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class ResumableDistributedSampler(Sampler):
    """Yields ``(dataset_index, sample_seed)`` for this rank's share of one epoch, from ``start`` on.

    ``start`` counts this rank's samples already consumed in the epoch.
    """

    def __init__(self, dataset_size: int, *, seed: int, epoch: int, rank: int, world_size: int,
                 start: int = 0) -> None:
        self.per_rank = dataset_size // world_size
        if self.per_rank == 0:
            raise ValueError(f"dataset of {dataset_size} samples is smaller than the world size {world_size}")
        if not 0 <= start <= self.per_rank:
            raise ValueError(f"sampler start {start} outside [0, {self.per_rank}]")
        self.seed, self.epoch, self.rank, self.world_size, self.start = seed, epoch, rank, world_size, start

    def __len__(self) -> int:
        return self.per_rank - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.per_rank * self.world_size,
                               generator=torch.Generator().manual_seed(_seed_of(self.seed, self.epoch)))
        for pos in range(self.start, self.per_rank):
            global_pos = pos * self.world_size + self.rank
            yield int(order[global_pos]), _seed_of(self.seed, self.epoch, global_pos)


class SeededDataset(Dataset):
    """Wraps a map-style dataset: item ``(index, seed)`` is ``dataset[index]`` under RNGs seeded by ``seed``.

    python ``random``, numpy's global RNG and torch's CPU RNG are seeded for the call and restored after,
    so loading in the main process (``num_workers=0``) leaves the training RNG untouched.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, item: tuple[int, int]) -> Any:
        return self.__getitems__([item])[0]

    def __getitems__(self, items: list[tuple[int, int]]) -> list[Any]:
        """A micro-batch (DataLoader's batched fetch) under one saving and restoring of the RNG states, which
        costs more than the seeding; each item is still made under its own seed."""
        with isolated_rng(cuda=False):  # no CUDA: this may run in a forked DataLoader worker
            out = []
            for index, seed in items:
                random.seed(seed)
                np.random.seed(seed % 2**32)
                # the CPU generator only: torch.manual_seed also queues a seeding of every device backend (cuda,
                # xpu, mtia) with a stack trace each, 0.2 ms a call against 2 us
                torch.default_generator.manual_seed(seed)
                out.append(self.dataset[index])
            return out


class MicroBatchStream:
    """Endless stream of micro-batches over epochs; ``state()`` says where it stands, for checkpoints.

    state: ``{"epoch": e, "position": p}`` with ``p`` the number of this rank's samples of epoch ``e``
    already yielded (counted as drawn by the trainer, not as prefetched by the loader).
    """

    def __init__(self, dataset: Dataset, collate_fn: Callable | None, *, micro_batch_size: int, seed: int,
                 rank: int, world_size: int, num_workers: int = 0, epoch: int = 0, position: int = 0) -> None:
        self.dataset, self.collate_fn = SeededDataset(dataset), collate_fn
        self.micro_batch_size, self.seed, self.num_workers = micro_batch_size, seed, num_workers
        self.rank, self.world_size = rank, world_size
        self.size = len(dataset)
        self.epoch, self.position = epoch, position
        self.batches_per_epoch = (self.size // world_size) // micro_batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"dataset of {self.size} samples gives no micro-batch of {micro_batch_size} "
                             f"per rank with {world_size} ranks")
        self._iter: Iterator | None = None

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def _loader(self) -> DataLoader:
        if hasattr(self.dataset.dataset, "set_epoch"):  # before the loader copies the dataset to its workers
            self.dataset.dataset.set_epoch(self.epoch)
        sampler = ResumableDistributedSampler(self.size, seed=self.seed, epoch=self.epoch, rank=self.rank,
                                              world_size=self.world_size, start=self.position)
        # The loader's own generator only seeds worker processes; sample randomness is SeededDataset's.
        generator = torch.Generator().manual_seed(_seed_of(self.seed, self.epoch, self.rank, self.position))
        return DataLoader(self.dataset, batch_size=self.micro_batch_size, sampler=sampler, drop_last=True,
                          collate_fn=self.collate_fn, num_workers=self.num_workers, generator=generator,
                          persistent_workers=False)

    def next(self) -> Any:
        """The next micro-batch (rolling over to the next epoch when this one has no full batch left)."""
        if self.position + self.micro_batch_size > self.batches_per_epoch * self.micro_batch_size:
            self.epoch, self.position, self._iter = self.epoch + 1, 0, None
        if self._iter is None:
            self._iter = iter(self._loader())
        batch = next(self._iter)
        self.position += self.micro_batch_size
        return batch
