"""A history of generated images for the discriminator (Shrivastava et al. 2017; CycleGAN).

Training the discriminator on a buffer of earlier fakes, not only the newest ones, damps the
oscillation of the adversarial game. For each new image: while the pool holds fewer than ``size``
images it is stored and used; afterwards, with probability 1/2 it is used as it is, otherwise a
uniformly chosen stored image is used in its place and the new one takes its slot.

The pool's contents are saved as one tensor, and its randomness comes from the caller's generator,
so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import torch


class ImagePool:
    def __init__(self, size: int = 50) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []  # each (C, H, W), detached

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def query(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, C, H, W) new fakes -> (B, C, H, W) images for the discriminator (float32, detached)."""
        images = images.detach().float()
        if self.size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=generator) < 0.5:
                i = int(torch.randint(self.size, (), generator=generator))
                out.append(self.images[i])
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        """{"size": int, "images": (n, C, H, W) float32 tensor on the CPU, or None while empty}."""
        return {"size": self.size, "images": torch.stack(self.images).cpu() if self.images else None}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        images = state.get("images")
        if images is not None and images.shape[0] > self.size:
            raise ValueError(f"saved pool holds {images.shape[0]} images, more than its size {self.size}")
        self.images = [] if images is None else [x.to(device) for x in images.float()]
