"""What ``atelier evaluate`` measures: generated images from a run directory, an ``.npz`` or a folder.

All three become one :class:`GeneratedSet` of uint8 (N, C, H, W) images. A run directory (or a
checkpoint or saved model) is sampled here with a seed, so the evaluation is reproducible; the run's
saved data config then tells the evaluator which real data it was trained on.
"""

from __future__ import annotations

import math
import tokenize
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from atelier.data import DataError
from atelier.data.base import ConversionNote
from atelier.device import TooLargeError, ensure_fits


@dataclass
class GeneratedSet:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None
    source: str  # the path it came from
    kind: str  # "model", "npz" or "folder"
    run_config: dict = field(default_factory=dict)  # a model's saved config.json (data, model, train)


#: A folder of generated images is held in memory at its own size up to this many bytes.
MAX_FOLDER_BYTES = 4 * 2**30


def images_from_array(array: np.ndarray, source: str = "array") -> torch.Tensor:
    """An image array -> uint8 (N, C, H, W).

    Accepts (N, H, W), (N, H, W, C) (atelier's .npz layout) or (N, C, H, W) with C in {1, 3, 4}
    (channels-last wins when both readings fit); uint8 0..255 or floats in [0, 1], or in [-1, 1]
    when any value is negative. An alpha channel is dropped.
    """
    a = np.asarray(array)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in (1, 3, 4):
        a = a.transpose(0, 3, 1, 2)
    elif not (a.ndim == 4 and a.shape[1] in (1, 3, 4)):
        raise DataError(f"{source}: expected images shaped (N, H, W), (N, H, W, C) or (N, C, H, W), got {a.shape}")
    if a.shape[0] == 0:
        raise DataError(f"{source}: the image array is empty")
    if 0 in a.shape[2:]:
        raise DataError(f"{source}: images of {a.shape[2]}x{a.shape[3]} pixels hold nothing to score")
    if a.shape[1] == 4:
        warnings.warn(ConversionNote(f"{source}: the images have an alpha channel; it was dropped and their RGB "
                                     f"channels are scored"), stacklevel=2)
        a = a[:, :3]
    if a.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(a))
    if not np.issubdtype(a.dtype, np.floating):
        raise DataError(f"{source}: images must be uint8 or float, got {a.dtype}")
    if not np.isfinite(a).all():
        raise DataError(f"{source}: the images contain NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1.0 - 1e-3 or hi > 1.0 + 1e-3:
        raise DataError(f"{source}: float images must lie in [0, 1] or [-1, 1], found [{lo:.3g}, {hi:.3g}]")
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if lo < 0:
        x = (x + 1) / 2
    return (x * 255).round_().clamp_(0, 255).to(torch.uint8)


#: What an ``.npz`` member may be: a plain array of numbers (object arrays would need unpickling).
_NPY_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_NPZ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error,
               NotImplementedError, RuntimeError,  # what zipfile and zlib raise for damaged or encrypted members
               SyntaxError, tokenize.TokenError)  # numpy re-reads an unparsable header with tokenize


def _npy_member(archive: zipfile.ZipFile, name: str, rows: int | None, where: str) -> np.ndarray:
    """The first ``rows`` (all when None) of the array in ``archive``'s member ``name``.

    The member's ``.npy`` header is read first and its declared size compared with the member's size
    before any data is: a header declaring a huge shape, or a member inflating to more than its header
    says, is refused before memory is allocated for it, and only the rows asked for are read."""
    info = archive.getinfo(name)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):  # what np.savez writes
        # zipfile inflates bzip2 and LZMA members whole before cutting them to their declared size: a bomb
        raise DataError(f"{where}: not a readable .npz file: {name} is compressed with method "
                        f"{info.compress_type}, not stored or deflated as numpy writes")
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in _NPY_READERS:
            raise DataError(f"{where}: {name} is a .npy of format version {version}; versions 1.0 and 2.0 are read")
        shape, fortran, dtype = _NPY_READERS[version](f)
        if dtype.hasobject:
            raise DataError(f"{where}: not a readable .npz file: {name} holds Python objects, which would "
                            "need unpickling; refused")
        header_end = f.tell()
        count = math.prod(shape)
        if info.file_size != header_end + count * dtype.itemsize:
            raise DataError(f"{where}: {name} declares shape {shape} of {dtype} ({count * dtype.itemsize:,} bytes) "
                            f"but holds {max(0, info.file_size - header_end):,} bytes of data")
        if rows is not None and len(shape) >= 1 and not fortran:
            shape = (min(rows, shape[0]), *shape[1:])
        nbytes = math.prod(shape) * dtype.itemsize
        ensure_fits(nbytes, f"{where}: the {shape} array {name}", advice="Evaluate fewer images (n)")
        data = bytearray(nbytes)  # writable, so torch can share it; filled in pieces, never held twice
        view, done = memoryview(data), 0
        while done < nbytes:
            piece = f.read(min(1 << 24, nbytes - done))
            if not piece:
                raise DataError(f"{where}: {name} is cut short")
            view[done:done + len(piece)] = piece
            done += len(piece)
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)


def _from_npz(path: Path, n: int | None) -> GeneratedSet:
    """An ``.npz`` (a zip of ``.npy`` members; only ``images`` and ``labels`` are read, never unpickled).
    DataError naming the file for anything else than images of numbers (and integer labels)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "images.npy" not in names:
                found = ", ".join(sorted(x.removesuffix(".npy") for x in names)[:10]) or "none"
                raise DataError(f"{path}: no array named 'images' (found: {found})")
            images = _npy_member(archive, "images.npy", n or None, str(path))
            labels = None
            if "labels.npy" in names and images.ndim >= 1:
                labels = _npy_member(archive, "labels.npy", len(images), str(path))
                if labels.ndim != 1 or labels.dtype.kind not in "iub" or len(labels) != len(images):
                    raise DataError(f"{path}: 'labels' must be one integer per image, got shape {labels.shape} "
                                    f"of {labels.dtype}")
                labels = torch.from_numpy(labels.astype(np.int64))
    except DataError:
        raise
    except TooLargeError as exc:
        raise DataError(str(exc)) from None
    except RecursionError:  # a .npy header is a Python literal: a nested one is not an array's
        raise DataError(f"{path}: not a readable .npz file (a malformed array header)") from None
    except _NPZ_ERRORS as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {str(exc)[:200]})") from exc
    return GeneratedSet(images_from_array(images, str(path)), labels, str(path), "npz")


def _from_folder(path: Path, n: int | None, resolution: int | None) -> GeneratedSet:
    from atelier.data.folder import load_folder
    from atelier.data.images import image_size, scan_images

    files = scan_images(path)
    if not files:
        raise DataError(f"{path}: no images found (PNG, JPEG, WebP or BMP)")
    if resolution is None:  # keep the images' own size: that of the first readable one
        problems = []
        for file in files:
            try:
                resolution = min(image_size(file))
                break
            except DataError as exc:  # the loader below names every unreadable file again
                problems.append(str(exc))
        else:
            raise DataError(f"{path}: none of the {len(files)} images is readable (first: {problems[0]})")
        need = (n or len(files)) * 3 * resolution**2
        if need > MAX_FOLDER_BYTES:
            raise DataError(f"{path}: {min(n or len(files), len(files)):,} images of {resolution}x{resolution} px "
                            f"would take {need / 2**30:.1f} GiB in memory (the limit is "
                            f"{MAX_FOLDER_BYTES / 2**30:.0f} GiB); evaluate fewer images (n) or smaller ones")
    data = load_folder(path, resolution=resolution, split="all" if (path / "train").is_dir() else "train",
                       progress=False)
    _say_resized(path, files, resolution)
    images = data.images[:n] if n else data.images
    return GeneratedSet(images, None, str(path), "folder")


def _say_resized(path: Path, files: list[Path], resolution: int) -> None:
    """A :class:`ConversionNote` when some images of the folder are not ``resolution`` square (so the
    loader resized and centre-cropped them); sizes come from the headers (unreadable files are named
    by the loader)."""
    from atelier.data.images import image_size

    odd, readable, example = 0, 0, ""
    for file in files:
        try:
            w, h = image_size(file)
        except DataError:
            continue
        readable += 1
        if (w, h) != (resolution, resolution):
            odd += 1
            example = example or f"{file.relative_to(path)} is {w}x{h}"
    if odd:
        warnings.warn(ConversionNote(
            f"{path}: {odd} of the {readable} images {'is' if odd == 1 else 'are'} not {resolution}x{resolution} "
            f"(e.g. {example}): resized "
            f"so the shorter side is {resolution} and centre-cropped to {resolution}x{resolution} before scoring"),
            stacklevel=4)  # the caller of load_generated


def _from_model(path: Path, n: int, seed: int) -> GeneratedSet:
    from atelier.models.sampling import sample_images
    from atelier.models import load_pretrained
    from atelier.models.pretrained import resolve_pretrained

    _, config = resolve_pretrained(path)
    samples = sample_images(load_pretrained(path), n, seed=seed)
    return GeneratedSet(samples.images, samples.labels, str(path), "model", config)


def load_generated(source: str | Path, *, n: int | None = 10000, seed: int = 0,
                   resolution: int | None = None) -> GeneratedSet:
    """Generated images to evaluate. ``source``: a run/checkpoint/model directory (``n`` samples are
    drawn with ``seed``), an ``.npz`` with an ``images`` array (first ``n``), or a folder of images
    (first ``n``, resized to ``resolution``, default the first image's size).

    Raises FileNotFoundError when ``source`` does not exist and DataError naming it for a file that is
    not such an ``.npz`` (see :func:`_from_npz`: only the first ``n`` images are read, after their
    declared size is checked against the member's and against memory) or a folder without images."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run directory, .npz file or image folder")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DataError(f"{path}: a file to evaluate must be an .npz with an 'images' array")
        return _from_npz(path, n)
    from atelier.models.pretrained import latest_checkpoint

    if latest_checkpoint(path) is not None:
        if not n:
            raise ValueError("give the number of samples to draw from a model (n)")
        return _from_model(path, n, seed)
    return _from_folder(path, n, resolution)
