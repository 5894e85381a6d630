"""Side-by-side novelty check: each generated image next to its nearest training image.

The distance is the root-mean-square pixel difference on a 0..1 scale
(:func:`atelier.metrics.memorisation.nearest_training_images`): 0 is an exact copy. Looking at the
closest pairs is the quickest way to see whether a model copies its training data.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from atelier.data.base import to_uint8
from atelier.data.resize import convert_channels, resize_square


class NeighbourPairs(NamedTuple):
    pairs: torch.Tensor  # (2k, C, H, W) uint8: a generated image, then its nearest training image
    distances: torch.Tensor  # (N,) RMS distance of every generated image to its nearest training image
    train_indices: torch.Tensor  # (N,) index of that training image
    shown: torch.Tensor  # (k,) indices of the generated images in ``pairs``, in order


def match_train_format(images: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """uint8 or [-1, 1] images -> uint8 at the training images' channels and resolution."""
    images = torch.as_tensor(images)
    images = images if images.dtype == torch.uint8 else to_uint8(images)
    images = convert_channels(images, train.shape[1])
    if images.shape[-2:] != train.shape[-2:]:
        if train.shape[-1] != train.shape[-2]:
            raise ValueError(f"training images must be square, got {tuple(train.shape[-2:])}")
        images = resize_square(images, train.shape[-1])
    return images


def nearest_neighbour_pairs(images: torch.Tensor, train: torch.Tensor, k: int = 16, *,
                            closest_first: bool = True) -> NeighbourPairs:
    """Match every image (uint8 or [-1, 1]) to its nearest ``train`` image (uint8, (M, C, H, W)).

    ``pairs`` shows ``k`` of them (all if fewer), each followed by its match: the ``k`` closest to
    the training set (the likeliest copies) with ``closest_first``, else the first ``k``. Images are
    converted to the training images' channels and resolution first.
    """
    from atelier.metrics.memorisation import nearest_training_images

    train = torch.as_tensor(train)
    if train.dtype != torch.uint8 or train.dim() != 4 or train.shape[0] == 0:
        raise ValueError(f"train must be a non-empty uint8 (M, C, H, W) tensor, got {train.dtype} {tuple(train.shape)}")
    if torch.as_tensor(images).dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got {tuple(torch.as_tensor(images).shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    images = match_train_format(images, train)
    distances, index = nearest_training_images(images, train)
    k = min(k, images.shape[0])
    shown = torch.argsort(distances, stable=True)[:k] if closest_first else torch.arange(k)
    pairs = torch.stack([images[shown], train[index[shown]]], dim=1).flatten(0, 1)
    return NeighbourPairs(pairs, distances, index, shown)
