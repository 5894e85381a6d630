"""Image files in and out: the one decoder and the one PNG encoder every module uses.

Decoding is strict (:func:`strict_pil`): truncated files and decompression bombs raise instead of being
padded or decoded, only PNG/JPEG/WebP/BMP decoders run whatever a file's name says, and an image's
declared size is checked against ``max_pixels`` from its header before any pixel is decoded.
Encoding writes PNGs atomically (:func:`save_image`) from uint8 images or floats in [-1, 1]; a PNG holds
its pixels and, when given one, the allowlisted provenance record (:mod:`atelier.data.provenance`), never
any other text. :func:`clean_upload` turns an uploaded image file into its pixels alone (EXIF, GPS,
XMP, ICC profiles, comments and text chunks dropped), and :func:`safe_stem` an upload's file name into
a short name that can never be a path.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from atelier.data.base import DataError, to_uint8
from atelier.data.provenance import Provenance, png_info
from atelier.io import atomic_write_bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
#: Refuse images declaring more pixels than this (width * height), checked from the header before decoding.
MAX_PIXELS = 50_000_000
# The only decoders PIL may use, whatever a file's name says (the JPEG one also opens multi-picture "MPO" files).
_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
_GREY_MODES = {"1", "L", "LA", "La", "I", "F"}


class TooManyPixels(DataError):
    """An image declaring more pixels than allowed, refused from its header before decoding."""


class _CappedReader(io.BufferedReader):
    """A binary file whose ``read(n)`` never asks for more than the file still holds.

    PIL reads a PNG chunk by the length the chunk declares (up to 2 GiB), and Python allocates a read's
    whole size before reading: a damaged 75-byte PNG made it allocate 192 MiB (found by the reader fuzz).
    Reading from memory (``BytesIO``) slices instead, so only files need this."""

    def __init__(self, path: Path) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self._size = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
            size = min(size, max(0, self._size - self.tell()))
            if size == 0:
                return b""
        return super().read(size)


def _open_file(path: str | os.PathLike | io.IOBase) -> contextlib.AbstractContextManager:
    """``path`` opened for PIL (which leaves a file object it was given open: close it yourself); a binary
    file object already open (the studio's uploads, in memory) is used as it is, and left open."""
    if isinstance(path, io.IOBase):
        return contextlib.nullcontext(path)
    return _CappedReader(Path(path))


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


def model_input(source, resolution: int, channels: int, *, max_pixels: int | None = MAX_PIXELS) -> torch.Tensor:
    """One image (a path or a binary file object) as a model's input: uint8 (channels, R, R), centre-cropped
    and resized to the side ``resolution``, grey <-> colour converted (BT.601 luma). Raises as
    :func:`decode_image` does (inside :func:`strict_pil`)."""
    from atelier.data.resize import convert_channels

    with strict_pil():
        array = decode_image(source, resolution, max_pixels=max_pixels)
    image = torch.from_numpy(np.array(array))  # a writable copy
    image = image[None] if image.dim() == 2 else image.permute(2, 0, 1)
    return convert_channels(image[None], channels)[0]


def decode_image(path: Path, resolution: int, *, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """One image file -> uint8 (R, R) grey or (R, R, 3) RGB. Raises :class:`DataError` on anything
    unreadable (its message starts "not a readable image" and names PIL's error), :class:`TooManyPixels`
    for an image over ``max_pixels`` (from its header, before decoding).

    Call inside :func:`strict_pil` so truncated files and PIL's own bomb warnings raise too.
    """
    try:
        with _open_file(path) as f, Image.open(f, formats=_FORMATS) as im:  # reads the header only
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise TooManyPixels(
                    f"declares {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} (max_pixels); "
                    f"refused without decoding as a possible decompression bomb"
                )
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            return np.asarray(_fit_square(_to_grey_or_rgb(im), resolution))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"not a readable image ({type(exc).__name__}: {exc})") from exc


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
        with _open_file(p) as f:
            return _read_photo(f, str(p), size, max_pixels)
    except OSError as exc:  # unreadable (permissions, a folder): named, like every other failure
        raise DataError(f"{p}: cannot read ({exc.strerror or exc})") from exc


def read_image_bytes(data: bytes, *, name: str = "the upload", size: int | None = None,
                     max_pixels: int | None = MAX_PIXELS) -> torch.Tensor:
    """:func:`read_image` for the bytes of an image file (an upload); errors name ``name``."""
    return _read_photo(io.BytesIO(data), name, size, max_pixels)


def _read_photo(source, name: str, size: int | None, max_pixels: int | None) -> torch.Tensor:
    try:
        with strict_pil(), Image.open(source, formats=_FORMATS) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise TooManyPixels(f"declares {w}x{h} pixels, over the limit of {max_pixels:,}")
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            array = np.asarray(_fit_longer_side(_to_grey_or_rgb(im).convert("RGB"), size))
    except DataError as exc:
        raise type(exc)(f"{name}: {exc}") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def _fit_longer_side(im: Image.Image, size: int | None) -> Image.Image:
    """Resize (LANCZOS) so the longer side is ``size`` pixels; None: as it is."""
    if size is None:
        return im
    if size < 1:
        raise DataError(f"size must be positive, got {size}")
    scale = size / max(im.size)
    new = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    return im.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0) if new != im.size else im


def clean_upload(data: bytes, *, name: str = "the upload", max_pixels: int | None = MAX_PIXELS,
                 max_side: int | None = None) -> bytes:
    """An uploaded image file as a new PNG of its pixels alone, for anything that keeps an upload.

    EXIF orientation is applied first, then everything but the pixels is left behind: EXIF (with its GPS
    tags, camera serials, owner names), XMP packets, IPTC, ICC profiles, comments, PNG text chunks
    (``tEXt``/``iTXt``/``zTXt``/``eXIf``), thumbnails and any further frames. The pixels are those the
    decoders would see (grey or RGB, transparency composited onto white), so decoding the result gives
    what decoding the upload gives. ``max_side`` shrinks it (LANCZOS) so the longer side is at most that,
    exactly as ``read_image_bytes(size=...)`` would. Raises :class:`DataError` naming ``name`` for what
    is not a readable image, :class:`TooManyPixels` for one over ``max_pixels`` (before decoding).
    """
    try:
        with strict_pil(), Image.open(io.BytesIO(data), formats=_FORMATS) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise TooManyPixels(f"declares {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}; "
                                    "refused before decoding")
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            im = _to_grey_or_rgb(im)
            if max_side is not None and max(im.size) > max_side:
                im = _fit_longer_side(im, max_side)
            # a new image from the bare pixel array: nothing of the upload's info dict (EXIF, ICC...)
            # can reach the encoder, whatever a future PIL copies by default
            pixels = Image.fromarray(np.ascontiguousarray(np.asarray(im)))
    except DataError as exc:
        raise type(exc)(f"{name}: {exc}") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{name}: not a readable image ({type(exc).__name__})") from exc
    buf = io.BytesIO()
    pixels.save(buf, format="PNG", compress_level=1, pnginfo=png_info(None))
    return buf.getvalue()


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(name: str, *, max_length: int = 64) -> str:
    """A name an upload gave (a multipart file name, a zip member's path) as a short ASCII stem that is
    never a path: the last component after any ``/`` or ``\\``, a drive (``C:``) dropped, its extension
    dropped, other characters than letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``, no leading
    dot; "" when nothing is left (``../..``). For naming outputs after their inputs, beside a number."""
    base = re.split(r"[/\\]", unicodedata.normalize("NFKD", name))[-1]
    base = re.sub(r"^[A-Za-z]:", "", base)
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    stem = _UNSAFE_NAME.sub("_", stem.encode("ascii", "ignore").decode()).strip("._-")
    return stem[:max_length].rstrip("._-")


# -- encoding ---------------------------------------------------------------------------------


def as_uint8(images: torch.Tensor) -> torch.Tensor:
    """Accept uint8 images or float images in [-1, 1]."""
    return images if images.dtype == torch.uint8 else to_uint8(images)


def to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) uint8 or [-1, 1] float -> a PIL image (L or RGB)."""
    array = as_uint8(image[None])[0].permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else np.ascontiguousarray(array))


def png_bytes(image: torch.Tensor, *, scale: int = 1, compress_level: int = 6,
              provenance: Provenance | None = None) -> bytes:
    """One (C, H, W) uint8 or [-1, 1] image -> PNG bytes (grey or RGB); ``scale`` enlarges it.
    ``compress_level`` (0-9): zlib's effort; 1 is several times faster for a little more size.
    ``provenance``: the one text chunk the PNG carries (see :mod:`atelier.data.provenance`); None: none."""
    pil = to_pil(image)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", compress_level=compress_level, pnginfo=png_info(provenance))
    return buf.getvalue()


def save_image(image: torch.Tensor, path: str | Path, *, scale: int = 1,
               provenance: Provenance | None = None) -> Path:
    """Write one (C, H, W) image as PNG atomically; ``scale`` enlarges it with nearest-neighbour;
    ``provenance``: the record it carries (None: no text chunk)."""
    atomic_write_bytes(Path(path), png_bytes(image, scale=scale, provenance=provenance))
    return Path(path)


def output_names(inputs: Sequence[Path], suffix: str = ".png") -> list[Path]:
    """Where each input goes when a batch of image files is written out as ``suffix`` files: the one
    naming policy of every command that writes one output per input (translate, stylize, augment).

    ``inputs`` are paths relative to the output folder, with their own extensions (``sub/a.jpg``). Each
    keeps its path with the extension replaced; when that would clash with an input already of type
    ``suffix`` (``a.jpg`` next to ``a.png``), the other keeps its extension in the name (``a_jpg.png``);
    any remaining clash (the same name given twice) is numbered: ``a_2.png``, ``a_3.png``.
    """
    plain = {rel.with_suffix(suffix) for rel in inputs if rel.suffix.lower() == suffix}
    taken: set[Path] = set()
    names = []
    for rel in inputs:
        target = rel.with_suffix(suffix)
        if rel.suffix.lower() != suffix and target in plain:
            target = rel.with_name(f"{rel.stem}_{rel.suffix.lstrip('.').lower()}{suffix}")
        first, n = target, 2
        while target in taken:
            target, n = first.with_name(f"{first.stem}_{n}{suffix}"), n + 1
        taken.add(target)
        names.append(target)
    return names


def image_size(path: str | os.PathLike, *, max_pixels: int | None = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of an image file from its header alone, with the decoder's guards: only the
    PNG/JPEG/WebP/BMP decoders, and a size over ``max_pixels`` refused. Raises :class:`DataError`
    naming the file."""
    p = Path(path)
    try:
        with strict_pil(), _open_file(p) as f, Image.open(f, formats=_FORMATS) as im:
            w, h = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{p}: not a readable image ({type(exc).__name__}: {exc})") from exc
    if max_pixels is not None and w * h > max_pixels:
        raise TooManyPixels(f"{p}: declares {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}; "
                        "refused without decoding as a possible decompression bomb")
    return w, h
