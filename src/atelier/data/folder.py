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

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from atelier.data.base import DataError, ImageDataset, Message, Option
from atelier.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, decode_image, scan_images, strict_pil
from atelier.data.resize import check_resolution
from atelier.device import ensure_fits

_SHOWN_FAILURES = 5


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

    # each image decoded at the resolution, then copied into one array: twice the final size at the peak
    ensure_fits(2 * len(files) * 3 * resolution * resolution,
                f"{len(files):,} images of {resolution}x{resolution} from {root}", advice="Choose a smaller resolution")
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
                    raise DataError(Message(
                        f"{file}: cannot use this image: {reason}. Fix or remove the file, or ",
                        Option("not_strict", "pass strict=False"), " to skip unreadable images with a warning.",
                    )) from exc
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
