"""Reproducible mini-batches from an in-memory dataset.

The batch at a given step is a pure function of (seed, step, rank): epoch e uses the permutation
seeded by (seed, e), so resuming at step N needs no sampler state, and under DDP each rank takes its
own disjoint slice of the same permutation.
"""

from __future__ import annotations

import torch

from atelier.data import DataError, ImageDataset, to_float
from atelier.data.base import Batch


class BatchSampler:
    def __init__(self, dataset: ImageDataset, batch_size: int, seed: int, *, device: torch.device,
                 rank: int = 0, world_size: int = 1, channels_last: bool = False) -> None:
        self.steps_per_epoch = len(dataset) // (batch_size * world_size)
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{dataset.name}: {len(dataset)} images are fewer than one batch of {batch_size}"
                f"{f' x {world_size} processes' if world_size > 1 else ''}; lower --batch-size"
            )
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.device, self.channels_last = device, channels_last
        # Keep the uint8 images on the accelerator when they fit easily: no host->device copy per step.
        on_device = device.type != "cpu" and dataset.images.numel() < 2**31
        self.images = dataset.images.to(device) if on_device else dataset.images
        self.labels = dataset.labels.to(self.images.device) if dataset.labels is not None else None
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.images), generator=g)
        return self._perm

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def __call__(self, step: int) -> Batch:
        epoch, i = divmod(step, self.steps_per_epoch)
        start = (i * self.world_size + self.rank) * self.batch_size
        idx = self._permutation(epoch)[start : start + self.batch_size].to(self.images.device)
        images = to_float(self.images[idx].to(self.device, non_blocking=True))
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = self.labels[idx].to(self.device) if self.labels is not None else None
        return Batch(images, labels)
