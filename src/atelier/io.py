"""The bottom layer: atomic file writes, JSON, and safetensors read/write, with one error type.

Every file Atelier writes goes through :func:`atomic_write_bytes` (a temporary file in the same
directory, fsync, rename), or for output written in pieces :func:`atomic_open`, :func:`atomic_npz`
(a streamed ``.npz``) and :func:`atomic_directory`, so a crash at any moment leaves either the old
file or the new one, never half of one. Reading a file that is there but is not what it should be raises :class:`FileFormatError`
naming the file; a missing file raises :class:`FileNotFoundError`. Nothing here unpickles.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file


class FileFormatError(ValueError):
    """A file exists but cannot be read as what it should be (corrupt, truncated, wrong format)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()
FILE_MODE = 0o666 & ~UMASK  # what open() would give a new file (mkstemp makes them 0600)
DIR_MODE = 0o777 & ~UMASK  # what mkdir() would give a new directory (mkdtemp makes them 0700)


def _temp_beside(path: Path) -> tuple[int, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, FILE_MODE)
    return fd, Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    with atomic_open(path) as f:
        f.write(data)
    return Path(path)


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary file to write ``path`` in pieces: a temporary file beside it, fsync'd and renamed onto
    ``path`` when the block ends normally, deleted when it raises or is interrupted."""
    path = Path(path)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class NpzStream:
    """An ``.npz`` being written array by array, each in chunks (see :func:`atomic_npz`)."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self._zip = archive

    @contextmanager
    def array(self, name: str, shape: tuple[int, ...], dtype: Any) -> Iterator[Callable[[np.ndarray], None]]:
        """``write(chunk)`` for the array ``name`` of ``shape`` and ``dtype``: chunks along the first axis,
        in order, C-contiguous. Fewer or more values than ``shape`` holds raise ValueError."""
        dtype = np.dtype(dtype)
        expected = math.prod(shape) * dtype.itemsize
        written = 0
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)

            def write(chunk: np.ndarray) -> None:
                nonlocal written
                data = np.ascontiguousarray(chunk, dtype=dtype).tobytes()
                if written + len(data) > expected:
                    raise ValueError(f"{name}: more values than its shape {tuple(shape)} holds")
                member.write(data)
                written += len(data)

            yield write
            if written != expected:
                raise ValueError(f"{name}: {written // dtype.itemsize} values written, its shape {tuple(shape)} "
                                 f"holds {expected // dtype.itemsize}")


@contextmanager
def atomic_npz(path: str | os.PathLike, *, compress: bool = True) -> Iterator[NpzStream]:
    """Write an ``.npz`` (what ``np.load`` reads; deflated like ``np.savez_compressed`` when ``compress``)
    array by array and chunk by chunk, so memory stays bounded by a chunk whatever the arrays' sizes
    (``np.savez`` needs each array whole). Atomic as :func:`atomic_open`::

        with atomic_npz("out.npz") as npz, npz.array("images", (n, h, w, c), np.uint8) as write:
            for chunk in chunks:
                write(chunk)
    """
    with atomic_open(path) as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED,
                             allowZip64=True) as archive:
            yield NpzStream(archive)


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A hidden temporary directory beside ``path`` to fill; when the block ends normally it becomes
    ``path`` (replacing what was there as a whole), when it raises it is deleted with its contents.
    Callers decide beforehand whether an existing ``path`` may be replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, DIR_MODE)
        yield tmp
        old = None
        if path.is_dir():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / "replaced")
        elif path.exists():
            raise FileExistsError(f"{path} exists and is not a directory")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Pretty JSON (sorted keys, trailing newline), written atomically."""
    return atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def load_json(path: str | os.PathLike) -> Any:
    """Parsed JSON; FileNotFoundError if missing, FileFormatError (naming the file) if not JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{path}: not valid JSON ({exc})") from exc


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, *,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write tensors (and string metadata) as safetensors, atomically.

    safetensors refuses views and tensors that share storage, so each is written as a contiguous CPU copy."""
    path = Path(path)
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(tmp),
                  metadata=dict(metadata) if metadata else None)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_safetensors(path: str | os.PathLike, *, keys: Iterable[str] | None = None,
                     what: str = "tensors") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; only ``keys`` (those present) are read when given.

    ``what`` names the content in errors ("VGG weights", "checkpoint", ...)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file missing")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            present = set(f.keys())
            names = sorted(present) if keys is None else [k for k in keys if k in present]
            return {k: f.get_tensor(k) for k in names}, dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises several types for corrupt headers and short files
        raise FileFormatError(f"{path}: not a readable safetensors file of {what} "
                              f"({type(exc).__name__}: {exc})") from exc


def load_tensors(path: str | os.PathLike, *, what: str = "tensors") -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (see :func:`read_safetensors`)."""
    return read_safetensors(path, what=what)[0]
