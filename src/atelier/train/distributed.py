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
