"""MNIST from the standard IDX files: a strict reader, pinned checksums and a cached download.

File lookup: with ``data_dir`` the files are read from there (never downloaded); without it from
``cache_dir()/"mnist"``, downloading missing ones when ``download=True``. Each file may be gzip'd
(``name.gz``) or not (``name``). Checksums are of the decompressed content, which is identical on
every mirror, while the gzip wrappers differ.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from atelier.data.base import DataError, ImageDataset, Message, Option
from atelier.data.download import DownloadError, cache_dir, download_file
from atelier.data.resize import check_resolution, resize_square
from atelier.device import TooLargeError, ensure_fits

DEFAULT_BASE_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
BASE_URL_ENV = "ATELIER_MNIST_URL"

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (count, rows, cols)
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (count)

#: SHA-256 of the decompressed IDX files.
MNIST_SHA256: dict[str, str] = {
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
}

#: split -> (images file, labels file), without the .gz suffix.
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = [f"{name}.gz" for pair in SPLIT_FILES.values() for name in pair]


def _check_header(head: bytes | bytearray, *, magic: int, ndim: int, source: str) -> tuple[int, ...]:
    """The dimensions an IDX header declares; DataError naming ``source`` if it is short or of another kind."""
    header_len = 4 + 4 * ndim
    if len(head) < header_len:
        raise DataError(f"{source}: only {len(head)} bytes, too short for an IDX header of {header_len} bytes")
    found = int.from_bytes(head[:4], "big")
    if found != magic:
        raise DataError(
            f"{source}: not an IDX file of the expected kind: magic number {found}, expected {magic} "
            f"({'images' if magic == IMAGES_MAGIC else 'labels'}). Is it the right file, and not damaged?"
        )
    dims = tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if math.prod(max(d, 1) for d in dims) >= 2**62:  # (2**32 - 1, 2**32 - 1, 0): empty, but no array has that shape
        raise DataError(f"{source}: the header declares shape {dims}, which no array can have. "
                        "Is it the right file, and not damaged?")
    return dims


def _size_mismatch(source: str, dims: tuple[int, ...], payload: int | str) -> DataError:
    expected = math.prod(dims)
    kind = "truncated" if isinstance(payload, int) and payload < expected else "has trailing bytes"
    return DataError(
        f"{source}: file {kind}: the header declares shape {dims} ({expected} bytes of data) "
        f"but {payload} bytes follow. Re-download or replace the file."
    )


def parse_idx(data: bytes | bytearray, *, magic: int, ndim: int, source: str) -> np.ndarray:
    """Parse an unsigned-byte IDX file held in memory; every inconsistency is a DataError naming ``source``.

    Layout: big-endian uint32 magic, ``ndim`` big-endian uint32 dimensions, then exactly
    prod(dimensions) bytes.
    """
    dims = _check_header(data, magic=magic, ndim=ndim, source=source)
    header_len = 4 + 4 * ndim
    payload = len(data) - header_len
    if payload != math.prod(dims):  # exact: numpy's int64 product wraps for dimensions near 2**32
        raise _size_mismatch(source, dims, payload)
    # One copy so the tensor owns writable memory; no per-image loop.
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def _read_bytes(path: Path, *, magic: int, ndim: int) -> bytearray:
    """The file's content, gunzipped when it is gzip (detected by its magic bytes, not its name), read no
    further than its header declares. The header is checked first and the size it declares compared with
    the file's (a plain file) or with the memory there is (gzip, whose inflated size only reading tells),
    so a header declaring 2**31 images, or a gzip bomb, is refused before its data is read."""
    header_len = 4 + 4 * ndim
    source = str(path)
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            with (gzip.GzipFile(fileobj=raw, mode="rb") if gz else contextlib.nullcontext(raw)) as f:
                head = f.read(header_len)
                dims = _check_header(head, magic=magic, ndim=ndim, source=source)
                declared = math.prod(dims)
                if not gz:
                    payload = os.fstat(raw.fileno()).st_size - header_len
                    if payload != declared:
                        raise _size_mismatch(source, dims, payload)
                try:
                    ensure_fits(declared, f"{source}: the data its header declares (shape {dims})")
                except TooLargeError as exc:
                    raise DataError(f"{exc}. Is it the right file, and not damaged?") from None
                # in pieces: read(n) reserves n bytes first, and a gzip header may declare far more than follows
                data = bytearray(head)
                while len(data) < header_len + declared:
                    piece = f.read(min(header_len + declared - len(data), 1 << 24))
                    if not piece:
                        raise _size_mismatch(source, dims, len(data) - header_len)
                    data += piece
                if gz and f.read(1):
                    raise _size_mismatch(source, dims, f"more than {declared}")
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read or decompress ({exc}). Re-download or replace the file.") from exc
    return data


def _find(folder: Path, name: str) -> Path | None:
    """``folder/name.gz`` or ``folder/name``, whichever exists first."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _how_to_supply(folder: Path) -> Message:
    return Message(
        f"To use MNIST without downloading, put these four files (gzip'd or not) in {folder}: "
        f"{', '.join(ALL_FILES)}; or pass ", Option("data_dir", "`--data-dir DIR` (data_dir=DIR)"),
        f" naming a folder that holds them; or point {BASE_URL_ENV} (base_url=...) at a reachable mirror.",
    )


def _locate(
    names: list[str], *, data_dir: str | os.PathLike | None, download: bool, verify: bool,
    base_url: str | None, progress: bool,
) -> dict[str, Path]:
    """Path of each IDX file in ``names``, downloading missing ones into the cache if allowed."""
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise DataError(f"MNIST data_dir {folder} does not exist or is not a folder")
        found = {name: _find(folder, name) for name in names}
        missing = [f"{name}.gz" for name, path in found.items() if path is None]
        if missing:
            raise DataError(
                f"MNIST files missing from {folder}: {', '.join(missing)} (the same names without .gz also work)"
            )
        return found  # type: ignore[return-value]

    folder = cache_dir() / "mnist"
    paths: dict[str, Path] = {}
    for name in names:
        path = _find(folder, name)
        if path is None:
            if not download:
                raise DataError(Message(f"MNIST file {name}.gz is not in the cache and ",
                                        Option("downloads_off", "download=False"), ". ", _how_to_supply(folder)))
            url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/") + f"/{name}.gz"
            try:
                path = download_file(
                    url, folder / f"{name}.gz", sha256=MNIST_SHA256[name] if verify else None,
                    decompressed_sha256=True, progress=progress,
                )
            except DownloadError as exc:
                raise DataError(f"could not download MNIST file {name}.gz from {exc.url}: {exc.reason}. " + _how_to_supply(folder)) from exc
        paths[name] = path
    return paths


def _load_file(path: Path, name: str, *, magic: int, ndim: int, verify: bool, in_cache: bool) -> np.ndarray:
    data = _read_bytes(path, magic=magic, ndim=ndim)
    if verify:
        actual = hashlib.sha256(data).hexdigest()
        expected = MNIST_SHA256[name]
        if actual != expected:
            fix = "delete it to download it again, or " if in_cache else ""
            raise DataError(Message(
                f"{path}: checksum mismatch: expected sha256 {expected} of the decompressed content, got {actual}. "
                f"The file is damaged or not the original MNIST; {fix}pass ",
                Option("no_verify_data", "verify=False (`--no-verify`)"), " if you modified it deliberately.",
            ))
    return parse_idx(data, magic=magic, ndim=ndim, source=str(path))


def _load_split(paths: dict[str, Path], split: str, *, verify: bool, in_cache: bool) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = SPLIT_FILES[split]
    images = _load_file(paths[images_name], images_name, magic=IMAGES_MAGIC, ndim=3, verify=verify, in_cache=in_cache)
    labels = _load_file(paths[labels_name], labels_name, magic=LABELS_MAGIC, ndim=1, verify=verify, in_cache=in_cache)
    if 0 in images.shape[1:]:
        raise DataError(f"{paths[images_name]}: declares images of {images.shape[1]}x{images.shape[2]} pixels; "
                        "an image needs at least one row and one column")
    if len(images) != len(labels):
        raise DataError(
            f"{paths[labels_name]} holds {len(labels)} labels but {paths[images_name]} holds {len(images)} images; "
            f"the two files must come from the same split"
        )
    return images, labels  # (N, H, W) uint8, (N,) uint8


def load_mnist(
    *, resolution: int = 28, split: str = "train", data_dir: str | os.PathLike | None = None,
    download: bool = True, verify: bool = True, base_url: str | None = None, progress: bool = True,
) -> ImageDataset:
    """MNIST as a 1-channel :class:`ImageDataset` (see the module docstring for where files come from).

    Args:
        resolution: output side; other than 28 resizes with antialiased bilinear interpolation.
        split: "train" (60000), "test" (10000) or "all" (train then test).
        data_dir: read the IDX files from this folder instead of the cache (no download).
        download: fetch missing files into ``cache_dir()/"mnist"``.
        verify: check the pinned SHA-256 of each file's decompressed content (also of downloads).
        base_url: mirror to download from; default ``$ATELIER_MNIST_URL``, else the PyTorch S3 mirror.
        progress: show a download progress bar.

    Raises:
        DataError: a file missing, unreadable, of another kind, truncated or extended, declaring more
            data than memory holds (checked from its header before reading), or failing its checksum;
            the message names the file (see docs/errors.md).
        TooLargeError: the images resized to ``resolution`` would not fit in memory.
    """
    check_resolution(resolution)
    if split not in ("train", "test", "all"):
        raise DataError(f"mnist: unknown split {split!r}; use 'train', 'test' or 'all'")
    splits = ["train", "test"] if split == "all" else [split]
    names = [name for s in splits for name in SPLIT_FILES[s]]
    paths = _locate(names, data_dir=data_dir, download=download, verify=verify, base_url=base_url, progress=progress)
    image_parts, label_parts, original = [], [], 0
    for s in splits:
        images_np, labels_np = _load_split(paths, s, verify=verify, in_cache=data_dir is None)
        original = int(images_np.shape[-1])
        # Resized per split, so the splits may differ in size (only possible with verify=False).
        image_parts.append(resize_square(torch.from_numpy(images_np).unsqueeze(1), resolution))  # (N, 1, R, R)
        label_parts.append(torch.from_numpy(labels_np.astype(np.int64)))  # (N,)
    images = image_parts[0] if len(image_parts) == 1 else torch.cat(image_parts)
    labels = label_parts[0] if len(label_parts) == 1 else torch.cat(label_parts)
    num_classes = max(10, int(labels.max()) + 1) if len(labels) else 10
    folder = Path(data_dir).expanduser() if data_dir is not None else paths[names[0]].parent
    return ImageDataset(
        images=images,
        labels=labels,
        classes=[str(i) for i in range(num_classes)],
        name=f"mnist:{split}",
        meta={"source": str(folder), "split": split, "verified": verify, "original_resolution": original},
    )
