"""``load_dataset(spec)``: one entry point for every data source, by name or folder path."""

from __future__ import annotations

import os
import re
from pathlib import Path

from atelier.data.base import DataError, ImageDataset
from atelier.data.cifar10 import load_cifar10
from atelier.data.digits import load_digits_dataset
from atelier.data.images import MAX_PIXELS
from atelier.data.folder import load_folder
from atelier.data.mnist import load_mnist
from atelier.data.resize import check_resolution, convert_channels

#: The spec forms ``load_dataset`` understands, for help texts.
SPECS = ("digits", "mnist", "cifar10", "folder:PATH")
#: The side a dataset is stored at: load_dataset's default resolution (28 for anything not named here).
NATIVE_RESOLUTION = {"digits": 28, "mnist": 28, "cifar10": 32}
SPLITS = ("train", "test", "all")
#: A split with an optional slice of it: ``train``, ``train[:30000]``, ``test[5000:]``, ``all[100:200]``.
_SLICED = re.compile(r"(train|test|all)(?:\[(\d{0,9}):(\d{0,9})\])?")


def native_resolution(spec: str | os.PathLike) -> int:
    """The side ``load_dataset(spec)`` gives when told none: the dataset's own (32 for cifar10, 28 for
    digits and mnist) and 28 for a folder, whose images may have any size."""
    text = os.fspath(spec).strip().lower() if isinstance(spec, (str, os.PathLike)) else ""
    return NATIVE_RESOLUTION.get(text, 28)


def parse_split(split: str) -> tuple[str, int | None, int | None]:
    """(split, start, stop) of ``"train"`` or ``"train[START:STOP]"`` (either bound may be left out);
    a clear error for anything else."""
    m = _SLICED.fullmatch(split.strip()) if isinstance(split, str) else None
    if m is None:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}, optionally sliced by image index "
                        "as in train[:30000] or train[30000:]")
    start, stop = (int(v) if v else None for v in m.group(2, 3))
    if start is not None and stop is not None and stop <= start:
        raise DataError(f"split {split!r}: the slice is empty (stop {stop} <= start {start})")
    return m.group(1), start, stop


def split_slice(dataset: ImageDataset, split: str, start: int | None, stop: int | None) -> ImageDataset:
    """The images ``start:stop`` of a loaded split, in their stored order (an error, not a silently shorter
    set, when the slice reaches past the end)."""
    if start is None and stop is None:
        return dataset
    n = len(dataset)
    if (stop if stop is not None else start or 0) > n or (start or 0) >= n:
        raise DataError(f"split {split!r} of {dataset.name}: the split holds {n:,} images")
    part = dataset.subset(slice(start, stop))
    part.name = f"{dataset.name}[{'' if start is None else start}:{'' if stop is None else stop}]"
    return part


def load_dataset(
    spec: str,
    *,
    resolution: int | None = None,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    channels: int | None = None,
    strict: bool = False,
    download: bool = True,
    verify: bool = True,
    base_url: str | None = None,
    progress: bool = True,
    max_pixels: int | None = MAX_PIXELS,
) -> ImageDataset:
    """Load a dataset as uint8 (N, C, resolution, resolution) images.

    Args:
        spec: "digits" (sklearn, offline), "mnist" (IDX files; cached download), "cifar10" (the official
            binary archive; cached download) or "folder:PATH" (a bare path to an existing folder also
            works; "folder" alone uses ``data_dir``).
        resolution: side of the square output images; None: the dataset's own (28 for digits and mnist,
            32 for cifar10, 28 for a folder).
        split: "train", "test" or "all" (train then test). A plain folder has only one split:
            "train" and "all" are the whole folder; "test" needs train/ and test/ sub-folders. A slice
            of a split by image index, in its stored order: "train[:30000]", "train[30000:]",
            "test[0:1000]" (e.g. disjoint "public" and "private" halves of one dataset).
        data_dir: mnist: read the IDX files from this folder instead of the cache. cifar10: the archive
            ``cifar-10-binary.tar.gz``, its extracted ``cifar-10-batches-bin`` folder, or a folder holding either.
        channels: 1 or 3 to convert; None keeps the natural count (1 for digits/mnist, 3 for cifar10; for a folder
            3 if any image is colour, else 1).
        strict: folder: raise on the first unreadable image instead of skipping it with a warning.
        download: mnist, cifar10: fetch missing files into the cache.
        verify: mnist, cifar10: check the pinned SHA-256 checksums (use False for deliberately modified files).
        base_url: mnist, cifar10: download mirror (default ``$ATELIER_MNIST_URL`` or the PyTorch S3 mirror;
            ``$ATELIER_CIFAR10_URL`` or the official URL).
        progress: show progress bars.
        max_pixels: folder: refuse images declaring more pixels than this (decompression bombs).
    """
    if resolution is None:
        resolution = native_resolution(spec)
    check_resolution(resolution)
    whole = split
    split, start, stop = parse_split(split)
    if channels not in (None, 1, 3) or isinstance(channels, bool):
        raise DataError(f"channels must be 1, 3 or None (keep the natural count), got {channels!r}")
    if not isinstance(spec, (str, os.PathLike)):
        raise DataError(f"dataset spec must be a string, got {type(spec).__name__}")
    text = os.fspath(spec).strip()
    key = text.lower()

    if key == "digits":
        dataset = load_digits_dataset(resolution=resolution, split=split)
    elif key == "mnist":
        dataset = load_mnist(
            resolution=resolution, split=split, data_dir=data_dir, download=download, verify=verify,
            base_url=base_url, progress=progress,
        )
    elif key == "cifar10":
        dataset = load_cifar10(
            resolution=resolution, split=split, data_dir=data_dir, download=download, verify=verify,
            base_url=base_url, progress=progress,
        )
    elif key.startswith("folder:") or key == "folder" or (text and Path(text).expanduser().is_dir()):
        if key == "folder":
            if data_dir is None:
                raise DataError("spec 'folder' needs a path: use folder:PATH, or pass data_dir")
            path: str | os.PathLike = data_dir
        else:
            path = text[len("folder:"):] if key.startswith("folder:") else text
            if not path:
                raise DataError("spec 'folder:' needs a path after the colon, e.g. folder:./images")
        dataset = load_folder(path, resolution=resolution, split=split, strict=strict, progress=progress, max_pixels=max_pixels)
    elif "/" in text or os.sep in text:
        raise DataError(f"image folder {text} does not exist (dataset spec {text!r})")
    else:
        raise DataError(
            f"unknown dataset {text!r}: use one of {', '.join(SPECS)}, or the path of an existing folder of images"
        )

    dataset = split_slice(dataset, whole, start, stop)
    if channels is not None and channels != dataset.channels:
        dataset = ImageDataset(
            convert_channels(dataset.images, channels), dataset.labels, dataset.classes, dataset.name,
            {**dataset.meta, "natural_channels": dataset.channels},
        )
    return dataset
