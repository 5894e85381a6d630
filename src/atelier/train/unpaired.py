"""Unpaired two-domain batches for image-to-image translation (CycleGAN).

Each step draws a batch from domain A and, independently, one from domain B: nothing pairs the i-th
image of one with the i-th of the other. Each domain has its own :class:`BatchSampler` (its own
permutations, seeded apart), so the batch at a step is still a pure function of (seed, step, rank)
and resuming needs no sampler state. An epoch is a pass over the larger domain; the smaller one
simply starts its next permutation sooner.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from atelier.data import ImageDataset
from atelier.train.batches import Batch, BatchSampler


@dataclass
class UnpairedBatch(Batch):
    """``images``/``labels`` are domain A's batch; ``images_b``/``labels_b`` domain B's."""

    images_b: torch.Tensor  # (B, C_b, H, W) float in [-1, 1] on the training device
    labels_b: torch.Tensor | None = None


class UnpairedSampler:
    #: Added to the seed for domain B's permutations, so the two domains are shuffled independently.
    B_SEED_OFFSET = 7919

    def __init__(self, a: ImageDataset, b: ImageDataset, batch_size: int, seed: int, *, device: torch.device,
                 rank: int = 0, world_size: int = 1, channels_last: bool = False) -> None:
        common = dict(device=device, rank=rank, world_size=world_size, channels_last=channels_last)
        self.a = BatchSampler(a, batch_size, seed, **common)
        self.b = BatchSampler(b, batch_size, seed + self.B_SEED_OFFSET, **common)
        self.steps_per_epoch = max(self.a.steps_per_epoch, self.b.steps_per_epoch)

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def __call__(self, step: int) -> UnpairedBatch:
        a, b = self.a(step), self.b(step)
        return UnpairedBatch(a.images, a.labels, b.images, b.labels)
