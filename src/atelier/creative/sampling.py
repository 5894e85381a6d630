"""Writing samples (:func:`atelier.models.sampling.iter_samples`) as a PNG grid, an ``.npz`` array or a
folder of PNGs, batch by batch.

The output kind follows ``out``:

- ``*.png``: one grid (one column per class for conditional samples), at most
  :data:`~atelier.report.grid.MAX_GRID_IMAGES` images;
- ``*.npz``: ``images`` (N, H, W, C) uint8, plus ``labels`` (N,) int64 when there are any, streamed
  into the archive batch by batch (memory: one batch, plus 8 bytes per label);
- anything without a suffix (or an existing folder): a folder of PNGs, one per sample
  (``000000.png``, ...), inside one sub-folder per class for a conditional model (a labelled folder
  that ``folder:PATH`` data and ``atelier evaluate`` read). A non-empty folder is replaced only with
  ``overwrite``.

Every output is atomic: the file or folder appears whole when the last sample is written, and an
interrupted or failed run leaves nothing behind (the temporary is removed). Samples that held NaN or
+-inf pixels are refused (:class:`NonFiniteSamplesError`) unless ``allow_nonfinite``, which writes them
with a :class:`~atelier.models.sampling.NonFiniteSamplesWarning`.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from atelier.data.base import DataError, Message, Option
from atelier.io import atomic_directory, atomic_npz
from atelier.models.sampling import (MAX_SAMPLES, NonFiniteSamplesWarning, SampleSet, check_sample_count,
                                     nonfinite_message)
from atelier.report.grid import MAX_GRID_IMAGES, check_grid_size, save_grid
from atelier.signals import ShouldStop, check_stop

__all__ = ["MAX_GRID_IMAGES", "MAX_SAMPLES", "NonFiniteSamplesError", "check_sample_output", "save_samples",
           "write_samples"]


class NonFiniteSamplesError(DataError):
    """Samples held NaN or +-inf pixels (they would be written as black or white images); nothing was written."""


def output_kind(out: str | Path) -> str:
    """"grid" (``.png``), "npz" (``.npz``) or "folder" (no suffix, or an existing folder)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if out.is_dir() or suffix == "":
        return "folder"
    if suffix in (".png", ".npz"):
        return "grid" if suffix == ".png" else "npz"
    raise ValueError(f"{out}: unsupported output type {suffix!r}; use .png (a grid), .npz (an array) or a folder "
                     f"(one PNG per sample)")


def check_sample_output(out: str | Path, n: int, *, overwrite: bool = False) -> str:
    """Check, before anything is drawn, that ``n`` samples can go to ``out``; returns :func:`output_kind`."""
    check_sample_count(n)
    kind = output_kind(out)
    if kind == "grid":
        check_grid_size(n, f"{out}: a PNG grid", instead="; write them to a folder (one PNG each) or an .npz "
                        "file, both streamed in batches")
    if kind == "folder" and Path(out).exists() and not Path(out).is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; give a folder, a .png or an .npz as the output")
    if kind == "folder" and Path(out).is_dir() and any(Path(out).iterdir()) and not overwrite:
        raise DataError(Message(f"{out} exists and is not empty; choose another folder or pass ",
                                Option("overwrite", "overwrite=True"), " (replaces the whole folder)"))
    return kind


def _checked(batches: Iterable[SampleSet], n: int, allow_nonfinite: bool, bar,
             should_stop: ShouldStop | None) -> Iterator[SampleSet]:
    """The batches, counted against ``n``; NaN/inf samples refused unless ``allow_nonfinite`` (then warned);
    :class:`~atelier.signals.Stopped` between batches when ``should_stop`` says so."""
    seen = bad = 0
    iterator = iter(batches)
    while True:
        check_stop(should_stop, f"after {seen:,} of {n:,} samples; nothing was written")
        batch = next(iterator, None)
        if batch is None:
            break
        seen += batch.images.shape[0]
        bad += batch.nonfinite
        if batch.nonfinite and not allow_nonfinite:
            raise NonFiniteSamplesError(Message(
                f"{batch.nonfinite} of the samples {seen - batch.images.shape[0]}..{seen - 1} held NaN or infinite "
                f"pixel values (they would be written as black or white images); nothing was written. Check the "
                f"model's weights, or pass ", Option("allow_nonfinite", "allow_nonfinite=True"),
                " to write them anyway"))
        if seen > n:
            raise ValueError(f"more samples came than the {n} announced")
        bar.update(batch.images.shape[0])
        yield batch
    if seen != n:
        raise ValueError(f"{seen} samples came, {n} were announced")
    if bad:
        warnings.warn(nonfinite_message(bad, n), NonFiniteSamplesWarning, stacklevel=3)


def _grid_columns(images: torch.Tensor, labels: torch.Tensor | None) -> int:
    n = images.shape[0]
    k = int(labels.max()) + 1 if labels is not None and len(set(labels.tolist())) > 1 else 0
    return k if k and n >= k else math.ceil(math.sqrt(n))


def _safe_name(name: str, label: int) -> str:
    name = str(name).replace("/", "_").replace("\\", "_").strip()
    return name if name not in ("", ".", "..") else str(label)


def write_samples(batches: Iterable[SampleSet], out: str | Path, n: int, *, class_names: list[str] | None = None,
                  nrow: int | None = None, overwrite: bool = False, allow_nonfinite: bool = False,
                  progress: bool = False, should_stop: ShouldStop | None = None, provenance=None) -> Path:
    """Write the ``n`` samples that ``batches`` yields (e.g. ``Pipeline.sample_batches``) to ``out`` (kind
    by suffix, see the module docstring), one batch in memory at a time except for a grid. Atomic;
    nothing is written when a batch fails or holds NaN/inf samples without ``allow_nonfinite``.
    ``class_names`` name the class folders of a folder output (default: the class indices); ``nrow``
    the grid's columns. ``progress``: a progress bar (images written, on stderr). ``should_stop`` is
    asked between batches; when it says stop, :class:`~atelier.signals.Stopped` is raised and nothing
    is written. ``provenance`` (an :class:`atelier.data.provenance.Provenance`): the record each PNG carries
    (in a folder, with the image's index and label)."""
    out = Path(out)
    kind = check_sample_output(out, n, overwrite=overwrite)
    with tqdm(total=n, unit="img", desc=f"sampling to {out.name}", disable=not progress, leave=False) as bar:
        checked = _checked(batches, n, allow_nonfinite, bar, should_stop)
        if kind == "grid":
            parts = list(checked)
            images = torch.cat([p.images for p in parts])
            labels = torch.cat([p.labels for p in parts]) if parts[0].labels is not None else None
            return save_grid(images, out, nrow=nrow if nrow is not None else _grid_columns(images, labels),
                             provenance=provenance)
        if kind == "npz":
            return _write_npz(checked, out, n)
        return _write_folder(checked, out, n, class_names, provenance)


def _write_npz(batches: Iterator[SampleSet], out: Path, n: int) -> Path:
    first = next(batches)
    _, c, h, w = first.images.shape
    labels = []
    with atomic_npz(out) as npz:
        with npz.array("images", (n, h, w, c), np.uint8) as write:
            for batch in itertools.chain([first], batches):
                write(batch.images.permute(0, 2, 3, 1).numpy())
                if batch.labels is not None:
                    labels.append(batch.labels.numpy().astype(np.int64))
        if labels:
            with npz.array("labels", (n,), np.int64) as write:
                for part in labels:
                    write(part)
    return out


def _write_folder(batches: Iterator[SampleSet], out: Path, n: int, class_names: list[str] | None,
                  provenance=None) -> Path:
    from atelier.data.images import png_bytes

    digits = len(str(MAX_SAMPLES - 1))
    i = 0
    with atomic_directory(out) as tmp:  # the folder appears whole at the end: its files need no fsync each
        for batch in batches:
            labels = batch.labels.tolist() if batch.labels is not None else [None] * batch.images.shape[0]
            for image, label in zip(batch.images, labels):
                if label is None:
                    folder = tmp
                else:
                    name = class_names[label] if class_names is not None and label < len(class_names) else label
                    folder = tmp / _safe_name(name, label)
                    folder.mkdir(exist_ok=True)
                one = provenance.replace(index=i, label=label) if provenance is not None else None
                (folder / f"{i:0{digits}d}.png").write_bytes(png_bytes(image, provenance=one))
                i += 1
    return out


def save_samples(samples: SampleSet, out: str | Path, *, nrow: int | None = None, overwrite: bool = False,
                 class_names: list[str] | None = None) -> Path:
    """Samples already in memory to ``out``, as :func:`write_samples` (``.png`` grid, ``.npz`` or a
    folder); NaN/inf samples are written, with a warning, as they are already drawn."""
    return write_samples([samples], out, samples.images.shape[0], nrow=nrow, overwrite=overwrite,
                         class_names=class_names, allow_nonfinite=True)
