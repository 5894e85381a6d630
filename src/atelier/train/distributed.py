"""Process-group helpers, so the same trainer runs alone or under ``torchrun`` with DDP.

Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) each process trains on its own shard of every batch,
the networks are wrapped in DistributedDataParallel by the family step, and only rank 0 writes files.
Run alone, every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> "DistContext":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        ctx = cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return ctx

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def wrap(self, module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DistributedDataParallel around ``module`` when running under torchrun; else the module."""
        if not self.enabled or not any(p.requires_grad for p in module.parameters()):
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)

    @torch.no_grad()
    def average_buffers(self, module: torch.nn.Module) -> None:
        """Average ``module``'s floating-point buffers (batch-norm running statistics) over the ranks.

        DDP all-reduces gradients, so parameters stay identical; running statistics are computed from
        each rank's own batches and would drift apart (DDP's broadcast_buffers would overwrite them
        from rank 0 in the middle of a step, which the GAN's several discriminator passes do not
        allow). One all-reduce of all buffers at once, after each step, keeps the ranks identical."""
        if not self.enabled:
            return
        buffers = [b for b in module.buffers() if b.is_floating_point()]
        if not buffers:
            return
        flat = torch.cat([b.reshape(-1).float() for b in buffers])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for b in buffers:
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()
