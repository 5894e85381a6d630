"""Any folder of PNG/JPEG/WebP/BMP images, decoded once into one uint8 tensor.

Layout:
    * ``root/<class>/.../*.png`` -- labelled: the first-level sub-folder name is the class
      (classes sorted by name -> index). Deeper folders are searched but do not make new classes.
    * any image directly in ``root`` -- the whole folder is unlabelled.
    * ``root/train/...`` and ``root/test/...`` both present -- ``split`` picks one of them ("all" takes
      both) and classes come from the sub-folders inside; class indices are shared by the two splits.
      Without that layout a folder has only one split: "train" and "all" both mean every image, "test"
      is an error.

Files and folders whose names start with "." are ignored (e.g. macOS ``._photo.jpg`` resource forks).
Each image is turned upright (EXIF orientation), converted to grey or RGB, resized so its shorter side
is ``resolution`` and centre-cropped to a square. The result is 3-channel if any image is in colour.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps
from tqdm import tqdm

from atelier.data.base import DataError, ImageDataset
from atelier.data.resize import check_resolution

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
#: Refuse images declaring more pixels than this (width * height), checked from the header before decoding.
MAX_PIXELS = 50_000_000
# The only decoders PIL may use, whatever a file's name says (the JPEG one also opens multi-picture "MPO" files).
_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
_GREY_MODES = {"1", "L", "LA", "La", "I", "F"}
_SHOWN_FAILURES = 5


@contextlib.contextmanager
def strict_pil() -> Iterator[None]:
    """Make PIL fail loudly: no silently-padded truncated images, decompression-bomb warnings raise.

    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is process-global and may have been switched on by other
    code; it is forced off here and restored afterwards.
    """
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def scan_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive, sorted, extension matched case-insensitively)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))  # prune hidden, walk in order
        for name in sorted(filenames):
            if not _is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(dirpath) / name)
    return found


def _is_grey_palette(im: Image.Image) -> bool:
    palette = im.getpalette()
    if not palette:
        return False
    rgb = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return bool((rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all())


def _to_grey_or_rgb(im: Image.Image) -> Image.Image:
    """Convert any decoded mode to "L" or "RGB".

    * Transparency (alpha channel or a tRNS colour key) is composited onto white: transparent
      backgrounds of logos and sprites become white, not black.
    * 16-bit grey ("I;16*" / "I") is scaled 0..65535 -> 0..255; PIL's own convert("L") would clip.
    * Palette images become grey if every palette entry is grey, else RGB. CMYK etc. become RGB.
    """
    mode = im.mode
    grey = mode in _GREY_MODES or mode.startswith("I;16") or (mode in ("P", "PA") and _is_grey_palette(im))
    if mode in ("L", "RGB") and "transparency" not in im.info:
        return im
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(im).astype(np.float64)  # (H, W), 0..65535
        return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")
    if "A" in mode or "a" in mode or "transparency" in im.info:
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return im.convert("L" if grey else "RGB")


def _fit_square(im: Image.Image, resolution: int) -> Image.Image:
    """Resize so the shorter side is ``resolution`` and centre-crop, in one resampling step."""
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    box = (left, top, left + side, top + side)
    # reducing_gap first shrinks large images by an integer factor (fast), then LANCZOS does the rest.
    return im.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


def decode_image(path: Path, resolution: int, *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """One image file -> uint8 (R, R) grey or (R, R, 3) RGB. Raises on anything unreadable or too large.

    Call inside :func:`strict_pil` so truncated files and PIL's own bomb warnings raise too.
    """
    with Image.open(path, formats=_FORMATS) as im:  # reads the header only
        w, h = im.size
        if max_pixels is not None and w * h > max_pixels:
            raise DataError(
                f"declares {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} (max_pixels); "
                f"refused without decoding as a possible decompression bomb"
            )
        im.load()
        ImageOps.exif_transpose(im, in_place=True)
        return np.asarray(_fit_square(_to_grey_or_rgb(im), resolution))


def _layout(root: Path, split: str) -> tuple[list[Path], list[Path]]:
    """(roots to load for ``split``, every split root) -- see the module docstring."""
    train, test = root / "train", root / "test"
    if train.is_dir() and test.is_dir():
        chosen = {"train": [train], "test": [test], "all": [train, test]}[split]
        return chosen, [train, test]
    if split == "test":
        raise DataError(
            f"{root}: a folder has no test split unless it contains both train/ and test/ sub-folders; "
            f"use split='train' or 'all' (both mean every image in the folder)"
        )
    return [root], [root]


def _class_name(split_root: Path, path: Path) -> str | None:
    """First-level sub-folder of ``path`` below ``split_root``, or None if it sits directly in it."""
    parts = path.relative_to(split_root).parts
    return parts[0] if len(parts) > 1 else None


def load_folder(
    path: str | os.PathLike, *, resolution: int = 28, split: str = "train", strict: bool = False,
    progress: bool = True, max_pixels: int | None = MAX_PIXELS,
) -> ImageDataset:
    """Load a folder of images (see the module docstring for layout and conversion).

    Args:
        path: the folder.
        resolution: output side length; every image becomes resolution x resolution.
        split: "train" / "all" (everything) or "test" (only with train/ and test/ sub-folders).
        strict: raise on the first unreadable image instead of skipping it with one warning at the end.
        progress: show a tqdm bar while decoding.
        max_pixels: refuse images declaring more pixels than this; None leaves only PIL's own limit.
    """
    check_resolution(resolution)
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass a folder of images (folder:PATH)")
    if split not in ("train", "test", "all"):
        raise DataError(f"{root}: unknown split {split!r}; use 'train', 'test' or 'all'")
    chosen, every = _layout(root, split)

    listed = {r: scan_images(r) for r in every}
    files = [(r, p) for r in chosen for p in listed[r]]
    accepted = ", ".join(IMAGE_EXTENSIONS)
    if not files:
        where = " and ".join(str(r) for r in chosen)
        raise DataError(f"no images found in {where} (searched recursively for {accepted}, any case)")
    labelled = all(_class_name(r, p) is not None for r, p in files)
    classes = sorted({c for r in every for p in listed[r] if (c := _class_name(r, p)) is not None}) if labelled else None
    index = {name: i for i, name in enumerate(classes or [])}

    arrays: list[np.ndarray] = []
    labels: list[int] = []
    failures: list[tuple[Path, str]] = []
    with strict_pil():
        for split_root, file in tqdm(files, desc=f"decoding {root.name}", unit="img", disable=not progress):
            try:
                arrays.append(decode_image(file, resolution, max_pixels=max_pixels))
            except Exception as exc:  # noqa: BLE001 - any failure to decode is this file's fault
                reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, DataError) else str(exc)
                if strict:
                    raise DataError(
                        f"{file}: cannot use this image: {reason}. Fix or remove the file, or pass "
                        f"strict=False to skip unreadable images with a warning."
                    ) from exc
                failures.append((file, reason))
                continue
            if classes is not None:
                labels.append(index[_class_name(split_root, file)])  # type: ignore[index]

    if not arrays:
        shown = "; ".join(f"{p.name} ({why})" for p, why in failures[:_SHOWN_FAILURES])
        raise DataError(f"no readable images in {root} ({len(failures)} {accepted} files failed: {shown})")
    if failures:
        shown = ", ".join(f"{p.relative_to(root)} ({why})" for p, why in failures[:_SHOWN_FAILURES])
        more = f" and {len(failures) - _SHOWN_FAILURES} more" if len(failures) > _SHOWN_FAILURES else ""
        warnings.warn(
            f"{root}: skipped {len(failures)} of {len(files)} image files that could not be read: "
            f"{shown}{more}. Pass strict=True to stop at the first bad file instead.",
            stacklevel=2,
        )

    colour = any(a.ndim == 3 for a in arrays)
    images = np.empty((len(arrays), 3 if colour else 1, resolution, resolution), dtype=np.uint8)  # (N, C, R, R)
    for i, a in enumerate(arrays):
        images[i] = a.transpose(2, 0, 1) if a.ndim == 3 else a  # grey broadcasts over 3 channels if needed
    return ImageDataset(
        images=torch.from_numpy(images),
        labels=torch.tensor(labels, dtype=torch.int64) if classes is not None else None,
        classes=classes,
        name=f"folder:{root.name}:{split}",
        meta={"source": str(root), "split": split, "skipped": len(failures)},
    )


def read_image(path: str | os.PathLike, *, size: int | None = None, max_pixels: int | None = MAX_PIXELS) -> torch.Tensor:
    """One image file -> float (3, H, W) RGB in [0, 1], aspect ratio kept (for style transfer).

    ``size`` resizes so the longer side is ``size`` pixels (LANCZOS). Grey images are repeated to RGB,
    transparency is composited onto white, EXIF orientation is applied. Unreadable, truncated or
    oversized files raise :class:`DataError` naming the file.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    try:
        with strict_pil(), Image.open(p, formats=_FORMATS) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise DataError(f"declares {w}x{h} pixels, over the limit of {max_pixels:,}")
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            im = _to_grey_or_rgb(im).convert("RGB")
            if size is not None:
                if size < 1:
                    raise DataError(f"size must be positive, got {size}")
                scale = size / max(im.size)
                new = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
                if new != im.size:
                    im = im.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
            array = np.asarray(im)
    except DataError as exc:
        raise DataError(f"{p}: {exc}") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{p}: not a readable image ({type(exc).__name__}: {exc})") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0
