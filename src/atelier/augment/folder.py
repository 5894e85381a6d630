"""Augment a folder of images into another folder, keeping its layout (and so its labels).

``augment_folder(input_dir, out_dir, pipeline, copies=K)`` reads every image under ``input_dir`` (the
formats and the strict decoder of :mod:`atelier.data.folder`), writes K augmented PNGs for each as
``out_dir/<same sub-folders>/<stem>_aug<k>.png``, and carries on past unreadable files, naming them
all at the end. Originals are not copied unless ``with_originals=True`` (then they are copied byte
for byte under their own names, so ``out_dir`` alone is a complete, enlarged training set).

Grey images stay grey (1-channel PNGs); images keep their size and aspect ratio unless ``size`` sets
the longer side. Every image gets its own seed derived from ``seed`` and its relative path, so its
augmentations do not depend on which other files are in the folder. ``out_dir/augment.json``
records the pipeline, seed and counts. The contact sheet (originals in the first column, their
augmentations beside them, up to 16 rows spread over the sub-folders) is written next to
``out_dir`` by default, never inside it: a PNG at the top of ``out_dir`` would make the folder read
as unlabelled.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from atelier.augment.pipeline import Pipeline, default_pipeline
from atelier.data.base import DataError
from atelier.data.images import IMAGE_EXTENSIONS, output_names, read_image, scan_images
from atelier.signals import ShouldStop

SHEET_ROWS = 16
SHEET_COLUMNS = 8  # augmentations shown per row at most
SHEET_TILE = 128  # largest tile side in the contact sheet, pixels


@dataclass
class AugmentResult:
    out_dir: Path
    images: int = 0  # readable input images
    written: int = 0  # augmented PNGs written
    copied: int = 0  # originals copied
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path relative to the input, reason)
    contact_sheet: Path | None = None
    manifest: Path | None = None
    total: int = 0  # image files found
    stopped: bool = False  # ``should_stop`` ended the loop early; every file written is complete

    def failure_message(self) -> str | None:
        """One message naming every unreadable file, or None."""
        if not self.failures:
            return None
        names = "; ".join(f"{name} ({why})" for name, why in self.failures)
        return (f"skipped {len(self.failures)} unreadable image file(s); the other {self.images} were augmented: "
                f"{names}")


def image_seed(seed: int, relative: str) -> int:
    """A 63-bit seed for one file, from the run seed and the file's relative path."""
    digest = hashlib.sha256(f"{seed}:{relative}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def check_dirs(root: Path, out: Path) -> None:
    """The input must be a folder; the output must not be it, lie inside it, or be a file."""
    if not root.exists():
        raise FileNotFoundError(f"input folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass a folder of images")
    r, o = root.resolve(), out.resolve()
    if o == r or r in o.parents:
        raise ValueError(f"the output folder {out} must not be the input folder or inside it (the augmented "
                         f"images would be read as inputs next time); choose a folder elsewhere")
    if o.exists() and not o.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")


def output_stems(root: Path, files: list[Path]) -> dict[Path, Path]:
    """Each file -> its output path without suffix (the copies add ``_augK.png``), by the naming policy
    of :func:`atelier.data.images.output_names`: ``a.jpg`` next to ``a.png`` becomes ``a_jpg``."""
    names = output_names([f.relative_to(root) for f in files])
    return {f: name.with_suffix("") for f, name in zip(files, names)}


def _sheet_order(root: Path, files: list[Path]) -> list[Path]:
    """Files interleaved across their folders (one from each class in turn), for the contact sheet."""
    by_folder: dict[Path, list[Path]] = {}
    for f in files:
        by_folder.setdefault(f.parent, []).append(f)
    queues = [by_folder[k] for k in sorted(by_folder)]
    order: list[Path] = []
    for i in range(max((len(q) for q in queues), default=0)):
        order.extend(q[i] for q in queues if i < len(q))
    return order


def _tile(image: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 (C, H, W) -> uint8 (C, side, side): longer side scaled to ``side``, centred on white."""
    c, h, w = image.shape
    scale = side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        image = x[0].round_().clamp_(0, 255).to(torch.uint8)
    out = torch.full((c, side, side), 255, dtype=torch.uint8)
    top, left = (side - nh) // 2, (side - nw) // 2
    out[:, top : top + nh, left : left + nw] = image
    return out


def write_contact_sheet(rows: list[torch.Tensor], path: Path) -> Path:
    """``rows``: uint8 (1 + k, C, H, W) stacks (original first); one PNG grid, one row per stack."""
    from atelier.report.grid import make_grid
    from atelier.data.images import save_image

    side = min(SHEET_TILE, max(max(r.shape[-2:]) for r in rows))
    columns = max(r.shape[0] for r in rows)
    colour = any(r.shape[1] == 3 for r in rows)
    tiles = []
    for r in rows:
        for i in range(columns):
            if i < r.shape[0]:
                t = _tile(r[i], side)
                tiles.append(t.expand(3, -1, -1) if colour and t.shape[0] == 1 else t)
            else:
                tiles.append(torch.full((3 if colour else 1, side, side), 255, dtype=torch.uint8))
    grid = make_grid(torch.stack(tiles), nrow=columns)
    return save_image(grid, path, scale=max(1, 64 // side))


def default_sheet_path(out_dir: Path) -> Path:
    """Next to the output folder: ``<out_dir>-contact-sheet.png``."""
    out = Path(out_dir).expanduser()
    if out.name in ("", ".", ".."):
        out = out.resolve()
    return out.parent / f"{out.name}-contact-sheet.png"


def _read(path: Path, size: int | None) -> torch.Tensor:
    """uint8 (1 or 3, H, W): grey when the decoded RGB has three equal channels."""
    rgb = read_image(path, size=size).mul_(255.0).round_().to(torch.uint8)  # exact: read_image divides by 255
    return rgb[:1].clone() if torch.equal(rgb[0], rgb[1]) and torch.equal(rgb[1], rgb[2]) else rgb


def augment_folder(
    input_dir: str | os.PathLike, out_dir: str | os.PathLike, pipeline: Pipeline | None = None, copies: int = 4, *,
    seed: int = 0, size: int | None = None, with_originals: bool = False, contact_sheet: bool | str | os.PathLike = True,
    sheet_rows: int = SHEET_ROWS, progress: bool = False, manifest: bool = True,
    should_stop: ShouldStop | None = None,
) -> AugmentResult:
    """Write ``copies`` augmented PNGs per readable image of ``input_dir`` into ``out_dir`` (see the module
    docstring). ``pipeline`` None uses :func:`default_pipeline` sized for the first image. ``contact_sheet``:
    True for :func:`default_sheet_path`, a path, or False for none. Raises only when nothing could be read.

    ``should_stop`` is asked before each image; when it returns True the loop ends there, no contact
    sheet is drawn, the manifest records what was written (``"stopped": true``) and the result says
    ``stopped``. Every PNG is written atomically, so each image's outputs written so far are complete."""
    from atelier.config import environment
    from atelier.data.images import save_image
    from atelier.io import atomic_write_bytes, atomic_write_json

    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies must be a positive integer, got {copies!r}")
    root, out = Path(input_dir).expanduser(), Path(out_dir).expanduser()
    check_dirs(root, out)
    sheet_path = None if contact_sheet is False else default_sheet_path(out) if contact_sheet is True else Path(contact_sheet)
    if sheet_path is not None:
        if sheet_path.suffix.lower() != ".png":
            raise ValueError(f"contact sheet {sheet_path}: expected a .png path")
        if out.resolve() in sheet_path.resolve().parents:
            raise ValueError(f"contact sheet {sheet_path} must not be inside the output folder {out}: it would be "
                             f"read as a training image (and, at the top, make the folder unlabelled)")
    files = scan_images(root)
    if not files:
        raise DataError(f"no images found in {root} (searched recursively for {', '.join(IMAGE_EXTENSIONS)}, any case)")
    stems = output_stems(root, files)
    candidates = set(_sheet_order(root, files)[: 2 * sheet_rows]) if sheet_path is not None else set()
    sheet: dict[Path, torch.Tensor] = {}
    result = AugmentResult(out, total=len(files))
    width = len(str(copies - 1))
    for file in tqdm(files, desc=f"augmenting {root.name}", unit="img", disable=not progress):
        if should_stop is not None and should_stop():
            result.stopped = True
            break
        rel = file.relative_to(root).as_posix()
        try:
            image = _read(file, size)
        except (DataError, OSError) as exc:
            result.failures.append((rel, str(exc).removeprefix(f"{file}: ")))
            continue
        if pipeline is None:
            pipeline = default_pipeline(3, min(image.shape[-2:]))
        batch = image[None].expand(copies, -1, -1, -1).contiguous()  # (K, C, H, W)
        augmented = pipeline(batch, seed=image_seed(seed, rel))
        for k in range(copies):
            save_image(augmented[k], out / f"{stems[file]}_aug{k:0{width}d}.png")
        if with_originals:
            atomic_write_bytes(out / file.relative_to(root), file.read_bytes())
            result.copied += 1
        result.images += 1
        result.written += copies
        if file in candidates:
            keep = torch.cat([image[None], augmented[:SHEET_COLUMNS]])
            sheet[file] = torch.stack([_tile(t, min(SHEET_TILE, max(image.shape[-2:]))) for t in keep])
    if result.images == 0 and not result.stopped:
        shown = "; ".join(f"{name} ({why})" for name, why in result.failures)
        raise DataError(f"no readable images in {root}: {shown}")
    if sheet_path is not None and not result.stopped:
        rows = [sheet[f] for f in _sheet_order(root, files) if f in sheet][:sheet_rows]
        result.contact_sheet = write_contact_sheet(rows, sheet_path)
    if manifest and result.images:  # (none only when stopped before the first image: nothing to describe)
        result.manifest = out / "augment.json"
        atomic_write_json(result.manifest, {
            "input": str(root), "copies": copies, "seed": seed, "size": size, "with_originals": with_originals,
            "pipeline": pipeline.config.to_dict() if pipeline is not None else None,
            "images": result.images, "written": result.written, "copied": result.copied,
            "failures": [list(f) for f in result.failures], "environment": environment(),
            **({"stopped": True, "total": result.total} if result.stopped else {}),
        })
    return result
