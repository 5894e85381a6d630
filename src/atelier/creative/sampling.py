"""Drawing samples from a trained model and writing them as a PNG grid or an ``.npz`` array."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from atelier.data.base import to_uint8
from atelier.report.grid import save_grid
from atelier.train.checkpoint import atomic_write_bytes


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


def save_samples(samples: SampleSet, out: str | Path, *, nrow: int | None = None) -> Path:
    """``.png``: one grid (one column per class for conditional samples); ``.npz``: ``images``
    (N, H, W, C) uint8, plus ``labels`` when there are any."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".png":
        if nrow is None:
            n = samples.images.shape[0]
            k = int(samples.labels.max()) + 1 if samples.labels is not None and len(set(samples.labels.tolist())) > 1 else 0
            nrow = k if k and n >= k else math.ceil(math.sqrt(n))
        return save_grid(samples.images, out, nrow=nrow)
    if suffix == ".npz":
        arrays = {"images": samples.images.permute(0, 2, 3, 1).contiguous().numpy()}
        if samples.labels is not None:
            arrays["labels"] = samples.labels.numpy().astype(np.int64)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(out, buf.getvalue())
        return out
    raise ValueError(f"{out}: unsupported output type {suffix!r}; use .png or .npz")
