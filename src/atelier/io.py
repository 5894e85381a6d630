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


def display_path(path: str | os.PathLike) -> str:
    """``path`` as a message shows it: as it is, or quoted with escapes when it holds a control character
    (a name given as "\\n" would otherwise make the message start on a line of its own)."""
    text = os.fspath(path)
    return text if text.isprintable() else repr(text)


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


def parse_json(data: bytes | str, where: str) -> Any:
    """``json.loads`` for data read from a file, with every way it can fail as one FileFormatError naming
    ``where``: bad syntax, bytes that are not UTF-8, an integer of more than 4,300 digits (Python's limit on
    converting them), or nesting deeper than the interpreter's recursion limit (``[[[[...]]]]``)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise FileFormatError(f"{where}: not readable JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and the integer-length limit are ValueErrors
        raise FileFormatError(f"{where}: not valid JSON ({str(exc)[:200]})") from exc


def load_json(path: str | os.PathLike) -> Any:
    """Parsed JSON; FileNotFoundError if missing, FileFormatError (naming the file) if not JSON
    (see :func:`parse_json`). The file is read whole: JSON files here are small (configs, records)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return parse_json(path.read_bytes(), str(path))


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


#: Bounds on what a safetensors header may declare, checked before the library reads it: a hostile file
#: cannot make us parse a gigabyte of JSON or build a million tensor objects.
MAX_SAFETENSORS_HEADER = 64 << 20
MAX_SAFETENSORS_TENSORS = 100_000
MAX_SAFETENSORS_DIMS = 64  # more dimensions than torch supports is not a tensor but a way to make us multiply
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def sniff_format(head: bytes) -> str | None:
    """What a file that is not safetensors looks like, from its first bytes (None: nothing recognised):
    a pickle, or a torch.save zip (which holds a pickle). Such files are refused, never unpickled."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (torch.save's format, which holds a pickle)"
    return None


def check_safetensors_header(head: bytes, size: int, where: str) -> int:
    """Validate a safetensors header (``head``: the file's first bytes, at least 8 + header length) against
    the file's ``size``: bounded length and tensor count, known dtypes, shapes matching their byte ranges,
    ranges inside the file, contiguous and non-overlapping. Returns the header length; FileFormatError
    otherwise (a pickle or torch.save file is named as such, and never unpickled)."""
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    # safetensors first (a header length such as 640 begins with the bytes of a pickle's protocol opcode)
    plausible = len(head) >= 9 and 2 <= n <= MAX_SAFETENSORS_HEADER and 8 + n <= size and head[8:9] == b"{"
    kind = None if plausible else sniff_format(head[:64])
    if kind is not None:
        raise FileFormatError(f"{where}: {kind}, not safetensors; refused without loading it (a pickle can run code)")
    if len(head) < 8:
        raise FileFormatError(f"{where}: too short to be safetensors ({len(head)} bytes)")
    if not 2 <= n <= MAX_SAFETENSORS_HEADER or 8 + n > size:
        raise FileFormatError(f"{where}: the safetensors header declares {n:,} bytes, impossible in a file of "
                              f"{size:,} bytes (the limit is {MAX_SAFETENSORS_HEADER:,})")
    if len(head) < 8 + n:
        raise FileFormatError(f"{where}: the safetensors header is cut short")
    try:
        header = json.loads(head[8:8 + n])
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: [[[[...]]]]
        raise FileFormatError(f"{where}: the safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise FileFormatError(f"{where}: the safetensors header is not a JSON object")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(tensors) > MAX_SAFETENSORS_TENSORS:
        raise FileFormatError(f"{where}: declares {len(tensors):,} tensors (at most {MAX_SAFETENSORS_TENSORS:,})")
    body = size - 8 - n
    spans = []
    for name, info in tensors.items():
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = dtype in _DTYPE_BYTES and isinstance(shape, list) and len(shape) <= MAX_SAFETENSORS_DIMS and all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d for d in shape) and \
                isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= body
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise FileFormatError(f"{where}: tensor {str(name)[:80]!r} has a malformed entry, more than "
                                  f"{MAX_SAFETENSORS_DIMS} dimensions, or a byte range outside the file")
        # the product stops growing past the file's size: declared dimensions such as 2**60 each cannot
        # make us multiply numbers of millions of digits
        count = 0 if 0 in shape else 1
        for d in shape:
            if count > body:
                break
            count *= d
        nbytes = count * _DTYPE_BYTES[dtype]
        if nbytes != end - start:
            described = f"{nbytes:,} bytes" if count <= body else "more bytes than the file holds"
            raise FileFormatError(f"{where}: tensor {str(name)[:80]!r} declares shape {str(shape)[:200]} of {dtype} "
                                  f"({described}) over {end - start:,} bytes")
        spans.append((start, end))
    spans.sort()
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        if b0 < a1:
            raise FileFormatError(f"{where}: two tensors' byte ranges overlap")
    return n


def check_safetensors_file(path: Path, what: str = "tensors") -> None:
    """:func:`check_safetensors_header` on a file, reading only its header."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        first = f.read(64)
        if len(first) >= 8:
            n = int.from_bytes(first[:8], "little")
            if 2 <= n <= MAX_SAFETENSORS_HEADER and 8 + n <= size and first[8:9] == b"{":
                f.seek(0)
                first = f.read(8 + n)
    check_safetensors_header(first, size, f"{path} ({what})")


def read_safetensors(path: str | os.PathLike, *, keys: Iterable[str] | None = None,
                     what: str = "tensors") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; only ``keys`` (those present) are read when given.
    The header is validated first (:func:`check_safetensors_header`): a pickle disguised as weights, a huge
    or inconsistent header, or offsets outside the file are refused before the library reads anything, so
    memory stays within the file's size (plus the parsed header, at most :data:`MAX_SAFETENSORS_HEADER`).

    ``what`` names the content in errors ("VGG weights", "checkpoint", ...). Raises FileNotFoundError
    when ``path`` is not a file and FileFormatError naming it for anything wrong inside (docs/errors.md)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} file missing")
    check_safetensors_file(path, what)
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
