"""scikit-learn's bundled 8x8 handwritten digits: 1797 images, available offline, for quick runs and tests."""

from __future__ import annotations

import numpy as np
import torch

from atelier.data.base import DataError, ImageDataset
from atelier.data.resize import check_resolution, resize_square

#: Seed of the fixed permutation behind the train/test split.
SPLIT_SEED = 0
#: Fraction of the (permuted) images that forms the training split; the rest is the test split.
TRAIN_FRACTION = 0.8


def split_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The deterministic (train, test) index arrays: a seed-0 permutation, the last 20 % is test."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_train = int(round(n * TRAIN_FRACTION))
    return order[:n_train], order[n_train:]


def load_digits_dataset(*, resolution: int = 28, split: str = "train") -> ImageDataset:
    """The sklearn digits as a 1-channel :class:`ImageDataset` at ``resolution``.

    Values 0..16 are scaled to 0..255 and upscaled with antialiased bilinear interpolation in float,
    rounding once at the end. ``split``: "train" (1438 images), "test" (359) or "all" (train then test).
    """
    from sklearn.datasets import load_digits  # imported late: sklearn is slow to import

    check_resolution(resolution)
    bunch = load_digits()
    pixels = torch.from_numpy(bunch.images.astype(np.float32))  # (1797, 8, 8) float, 0..16
    labels = torch.from_numpy(bunch.target.astype(np.int64))  # (1797,)
    train, test = split_indices(len(labels))
    if split == "train":
        index = train
    elif split == "test":
        index = test
    elif split == "all":
        index = np.concatenate([train, test])
    else:
        raise DataError(f"digits: unknown split {split!r}; use 'train', 'test' or 'all'")
    index_t = torch.from_numpy(index)
    # resize_square takes uint8; the digits are small ints, exact in uint8, and scaled in float inside.
    raw = pixels[index_t].unsqueeze(1).to(torch.uint8)  # (N, 1, 8, 8), 0..16
    images = resize_square(raw, resolution, scale=255.0 / 16.0)  # (N, 1, R, R), 0..255
    return ImageDataset(
        images=images,
        labels=labels[index_t],
        classes=[str(i) for i in range(10)],
        name=f"digits:{split}",
        meta={"source": "sklearn.datasets.load_digits", "split": split, "original_resolution": 8},
    )
