"""The in-memory image dataset every loader returns, and the errors bad data raises."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class DataError(ValueError):
    """Bad or missing data. The message names the file or setting at fault and what to do."""


@dataclass
class ImageDataset:
    """Images held in memory as one uint8 tensor, so an epoch never decodes a file again.

    Attributes:
        images: uint8 tensor of shape (N, C, H, W), C in {1, 3}, values 0..255.
        labels: int64 tensor of shape (N,) or None when the data has no classes.
        classes: class names (index -> name) or None.
        name: a short description of where the data came from, e.g. ``"mnist:train"``.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    classes: list[str] | None = None
    name: str = "dataset"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"{self.name}: images must be a uint8 tensor (N, C, H, W), "
                f"got {self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.images.shape[1] not in (1, 3):
            raise DataError(f"{self.name}: images must have 1 or 3 channels, got {self.images.shape[1]}")
        if self.labels is not None:
            if self.labels.shape != (self.images.shape[0],):
                raise DataError(
                    f"{self.name}: {self.labels.shape[0]} labels for {self.images.shape[0]} images"
                )
            self.labels = self.labels.long()
            if self.classes is None:
                self.classes = [str(i) for i in range(int(self.labels.max()) + 1)] if len(self.labels) else []

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.labels is not None and self.classes else 0

    def subset(self, index: torch.Tensor | slice) -> "ImageDataset":
        labels = self.labels[index] if self.labels is not None else None
        return ImageDataset(self.images[index], labels, self.classes, self.name, dict(self.meta))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the range generators produce (tanh)."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounding and clamping."""
    return images.detach().float().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
