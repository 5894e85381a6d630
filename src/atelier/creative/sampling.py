"""Writing samples (:func:`atelier.models.sampling.sample_images`) as a PNG grid or an ``.npz`` array."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from atelier.io import atomic_write_bytes
from atelier.models.sampling import SampleSet
from atelier.report.grid import save_grid


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
