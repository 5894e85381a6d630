"""Drawing a reproducible set of samples from any generative model: tensors in, tensors out."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from atelier.data.base import to_uint8


@dataclass
class SampleSet:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None  # (N,) int64 for conditional models


def sample_images(
    model, n: int, *, seed: int = 0, label: int | None = None, truncation: float | None = None,
    batch_size: int = 500,
) -> SampleSet:
    """``n`` samples from ``model`` (anything with ``sample(n, labels=, generator=, truncation=)``),
    reproducible from ``seed``. ``label`` fixes the class of a conditional model; otherwise the
    classes cycle 0, 1, ..., K-1 so every class is shown."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    conditional = getattr(model, "conditional", False)
    if label is not None and not conditional:
        raise ValueError("--label needs a class-conditional model; this one is unconditional")
    generator = torch.Generator().manual_seed(seed)
    labels = None
    if conditional:
        k = model.config.num_classes  # the model itself checks that labels lie in 0..k-1
        labels = torch.full((n,), label, dtype=torch.long) if label is not None else torch.arange(n) % k
    chunks = []
    for i in range(0, n, batch_size):
        part = labels[i : i + batch_size] if labels is not None else None
        m = min(batch_size, n - i)
        chunks.append(to_uint8(model.sample(m, labels=part, generator=generator, truncation=truncation)))
    return SampleSet(torch.cat(chunks), labels)
