"""Datasets as in-memory uint8 tensors: sklearn digits, MNIST (IDX, cached download), CIFAR-10 (the
official binary archive, cached download) and image folders.

    >>> ds = load_dataset("digits", resolution=32, split="test")
    >>> ds.images.shape          # (N, C, R, R) uint8
    torch.Size([359, 1, 32, 32])

Everything is decoded once into ``ImageDataset.images``; ``to_float`` maps it to [-1, 1] for models.
"""

from atelier.data.base import DataError, ImageDataset, to_float, to_uint8
from atelier.data.download import DownloadError, cache_dir, download_file
from atelier.data.registry import load_dataset, native_resolution

__all__ = [
    "DataError",
    "DownloadError",
    "ImageDataset",
    "cache_dir",
    "download_file",
    "load_dataset",
    "native_resolution",
    "to_float",
    "to_uint8",
]
