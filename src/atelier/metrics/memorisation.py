"""Memorisation and novelty: is a generated image new, or a copy of a training image?

Every sample is matched to its nearest training image by pixel distance (root-mean-square difference
on a 0..1 scale, so 0 is an exact copy and the value reads as "average per-pixel difference").
A sample is a *near-copy* when it lies closer to a training image than all but ``quantile`` (default
1%) of held-out real images do: the threshold is calibrated on the data itself, so a generator that
draws fresh samples from the data distribution gets a near-copy share of about ``quantile``, and a
share far above it (``memorisation_ratio`` >> 1) means copying. Exact copies always count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from atelier.metrics.knn import CHUNK, nearest_neighbours


def _flat(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 (N, C*H*W) on 0..1."""
    return images.flatten(1).float().div_(255.0)


def nearest_training_images(images: torch.Tensor, train: torch.Tensor, chunk: int = CHUNK, *,
                            exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMS pixel distance, index) of each image's nearest training image; uint8 inputs of one shape.
    ``exclude`` (N,) skips one training index per image (for training images matched to the rest)."""
    if images.shape[1:] != train.shape[1:]:
        raise ValueError(f"images {tuple(images.shape[1:])} and training images {tuple(train.shape[1:])} differ in shape")
    dist, index = nearest_neighbours(_flat(images), _flat(train), chunk, exclude=exclude)
    return dist / images[0].numel() ** 0.5, index


@dataclass
class NoveltyResult:
    distances: torch.Tensor  # (M,) RMS distance of each sample to its nearest training image
    indices: torch.Tensor  # (M,) index of that training image
    threshold: float  # distances below this are near-copies
    quantile: float | None  # the held-out quantile the threshold came from (None if given)
    heldout_distances: torch.Tensor | None  # (K,) the same distance for held-out real images

    @property
    def near_copy(self) -> torch.Tensor:
        return (self.distances <= self.threshold) | (self.distances == 0)

    @property
    def near_copy_fraction(self) -> float:
        return float(self.near_copy.float().mean())

    @property
    def memorisation_ratio(self) -> float | None:
        """Near-copy share over the share expected of fresh samples (the quantile); ~1 is healthy."""
        return self.near_copy_fraction / self.quantile if self.quantile else None

    def closest(self, k: int) -> torch.Tensor:
        """Indices of the ``k`` samples closest to a training image, closest first."""
        return self.distances.argsort()[:k]

    def summary(self) -> dict:
        return {
            "near_copy_fraction": self.near_copy_fraction,
            "memorisation_ratio": self.memorisation_ratio,
            "threshold": self.threshold,
            "quantile": self.quantile,
            "median_nn_distance": float(self.distances.median()),
            "heldout_median_nn_distance": (float(self.heldout_distances.median())
                                           if self.heldout_distances is not None else None),
        }


def novelty(images: torch.Tensor, train: torch.Tensor, *, heldout: torch.Tensor | None = None,
            threshold: float | None = None, quantile: float = 0.01, calibration_n: int = 2000, seed: int = 0,
            chunk: int = CHUNK) -> NoveltyResult:
    """Match uint8 ``images`` to their nearest ``train`` images and flag near-copies.

    The threshold is ``threshold`` if given, else the ``quantile`` of real images' own distances to
    the training set: of ``heldout`` images (e.g. the test split) when given, else of up to
    ``calibration_n`` training images matched to the *other* training images (leave-one-out).
    """
    dist, index = nearest_training_images(images, train, chunk)
    heldout_dist = None
    if threshold is None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
        if heldout is not None:
            heldout_dist = nearest_training_images(heldout[:calibration_n], train, chunk)[0]
        else:
            g = torch.Generator().manual_seed(seed)
            pick = torch.randperm(train.shape[0], generator=g)[: min(calibration_n, train.shape[0] - 1)]
            heldout_dist = nearest_training_images(train[pick], train, chunk, exclude=pick)[0]
        threshold = float(torch.quantile(heldout_dist, quantile))
        used_quantile: float | None = quantile
    else:
        used_quantile = None
    return NoveltyResult(dist, index, float(threshold), used_quantile, heldout_dist)
