"""What the studio does with a model, as functions of a :class:`~atelier.pipelines.Pipeline` that give
back files (name, media type, bytes): used by the quick routes and by the job workers alike.

Uploads are decoded here with the limits checked from the header before any pixel is decoded. An
upload's bytes go to a decoder and nowhere else: what is kept of one (a job's inputs) is a new PNG of
its pixels (:func:`clean_photo`, :func:`translate_inputs`), so EXIF, GPS, XMP and text chunks never
reach the database, and the names an upload gives (multipart file names, zip members) are never paths
and never echoed unsanitised. Generated images carry the allowlisted provenance record
(:func:`generation_provenance`): the model's name, family and weights' SHA-256, the seed and settings.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from atelier.creative.masks import show_hole
from atelier.data.base import DataError
from atelier.data.images import (TooManyPixels, as_uint8, clean_upload, model_input, png_bytes, read_image_bytes,
                                 safe_stem)
from atelier.data.provenance import Provenance, weights_sha256
from atelier.pipelines import Pipeline
from atelier.report.gif import gif_bytes
from atelier.report.grid import grid_png


@dataclass
class File:
    name: str
    media_type: str
    data: bytes


def check_upload(data: bytes, max_bytes: int, what: str = "the upload") -> bytes:
    if not data:
        raise DataError(f"{what} is empty")
    if len(data) > max_bytes:
        raise UploadTooLarge(f"{what} is {len(data):,} bytes, over the limit of {max_bytes:,}")
    return data


class UploadTooLarge(DataError):
    """An upload over the byte or pixel limits (answered 413)."""


#: The most images a translate job's zip may hold.
MAX_ZIP_IMAGES = 1000
# what archivers add beside the files: never an image
_ARCHIVE_CLUTTER = ("__MACOSX/", ".DS_Store", "Thumbs.db", "desktop.ini")


def clean_photo(data: bytes, *, max_pixels: int, max_side: int, what: str = "the upload") -> bytes:
    """An uploaded photo as the PNG of its pixels alone (see :func:`~atelier.data.images.clean_upload`),
    its longer side at most ``max_side``: what a job keeps of it. :class:`UploadTooLarge` over the limits."""
    try:
        return clean_upload(data, name=what, max_pixels=max_pixels, max_side=max_side)
    except TooManyPixels as exc:
        raise UploadTooLarge(str(exc)) from None


def upload_members(data: bytes, *, max_bytes: int, max_files: int = MAX_ZIP_IMAGES) -> list[tuple[str, bytes]]:
    """A zip of images, or one image, as [(safe stem, the file's bytes)]: folders and archivers' clutter
    skipped, each name reduced by :func:`~atelier.data.images.safe_stem` (never a path). The zip may unpack
    to at most four times ``max_bytes``."""
    if data[:4] != b"PK\x03\x04":
        return [("", data)]
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = [i for i in z.infolist() if not i.is_dir()
                       and not any(part in i.filename for part in _ARCHIVE_CLUTTER)
                       and not i.filename.replace("\\", "/").rsplit("/", 1)[-1].startswith("._")]
            if not members:
                raise DataError("the zip holds no files")
            if len(members) > max_files:
                raise UploadTooLarge(f"the zip holds {len(members):,} files, more than {max_files:,}")
            if sum(i.file_size for i in members) > 4 * max_bytes:
                raise UploadTooLarge("the zip unpacks to more than four times the upload limit")
            # the declared sizes bound memory only for stored and deflated members: zipfile inflates bzip2
            # and LZMA members whole before cutting them to their declared size (a bomb of any size)
            odd = next((i for i in members if i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)), None)
            if odd is not None:
                raise DataError(f"the zip's member {safe_stem(odd.filename)!r} is compressed with method "
                                f"{odd.compress_type}; only stored and deflated members are read")
            return [(safe_stem(i.filename), z.read(i)) for i in members]
    except DataError:
        raise
    except Exception as exc:  # zipfile, zlib, bz2 and lzma raise many types for damaged, encrypted or odd archives
        raise DataError(f"the zip cannot be read ({type(exc).__name__})") from None


def translate_inputs(data: bytes, pipe: Pipeline, *, max_bytes: int, max_pixels: int, direction: str) -> bytes:
    """What a translate job keeps of its upload (a zip of images or one image): each image already as the
    model's input, a metadata-free PNG, in a zip whose members are named ``00000-<safe stem>.png``. Every
    image is checked here, so a bad one is refused when the job is submitted."""
    members = upload_members(data, max_bytes=max_bytes)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:  # PNGs are compressed already
        for k, (stem, blob) in enumerate(members):
            what = f"image {k + 1}" + (f" ({stem})" if stem else "")
            image = model_image(blob, pipe, max_pixels=max_pixels, what=what, direction=direction)
            z.writestr(numbered_name(k, stem), png_bytes(image, compress_level=1))
    return out.getvalue()


def numbered_name(k: int, stem: str, suffix: str = ".png") -> str:
    """``00000-stem.png`` (``00000.png`` without a stem): an output's name, never a path."""
    # usually safe_stem's already; made safe again all the same: no separator, no leading dot, short
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:64].rstrip("._-")
    return f"{k:05d}{'-' + stem if stem else ''}{suffix}"


def generation_provenance(catalog, name: str, *, seed: int, n: int, label: int | None = None,
                          truncation: float | None = None) -> Provenance:
    """The record samples of the served model ``name`` carry: its name in the catalog (never its folder),
    family and weights' SHA-256, and the request's seed and settings. Anything not allowed is dropped."""
    entry = catalog.get(name)
    return Provenance.from_mapping({
        "operation": "sample", "model_family": entry.family, "model_name": name,
        "weights_sha256": weights_sha256(entry.checkpoint), "seed": seed, "n": n, "label": label,
        "truncation": truncation})


def photo(data: bytes, *, max_pixels: int, max_side: int, what: str = "the upload") -> torch.Tensor:
    """An uploaded photo as float (3, H, W) in [0, 1], its longer side at most ``max_side``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Exception as exc:  # PIL raises several types for what is not an image
        raise DataError(f"{what}: not a readable image ({type(exc).__name__})") from None
    if w * h > max_pixels:
        raise UploadTooLarge(f"{what} declares {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}; "
                             "refused before decoding")
    return read_image_bytes(data, name=what, size=min(max_side, max(w, h)), max_pixels=max_pixels)


def model_image(data: bytes, pipe: Pipeline, *, max_pixels: int, what: str = "the upload",
                direction: str = "a2b") -> torch.Tensor:
    """An upload as the model's input: uint8 (C, R, R) at its resolution and channel count (for a
    CycleGAN, those of the domain ``direction`` translates from)."""
    config = pipe.model.config
    resolution = int(getattr(config, "resolution", 0) or getattr(config, "image_size", 0) or 64)
    channels = int(getattr(config, "channels", 0) or getattr(config, "channels_a" if direction == "a2b"
                                                                else "channels_b", 3))
    try:
        return model_input(io.BytesIO(data), resolution, channels, max_pixels=max_pixels)
    except DataError as exc:
        raise (UploadTooLarge if isinstance(exc, TooManyPixels) else DataError)(f"{what}: {exc}") from None
    except Exception as exc:
        raise DataError(f"{what}: not a readable image ({type(exc).__name__})") from None


def encode_samples(images: torch.Tensor, labels: torch.Tensor | None, fmt: str,
                   class_names: list[str] | None = None, *, compress: bool = True,
                   provenance: Provenance | None = None) -> File:
    """Samples (N, C, H, W) uint8 as one grid PNG, a zip of PNGs, or an ``.npz`` (images N,H,W,C; labels).
    ``compress=False``: a plain ``.npz`` (quick answers: compressing costs more than sending, on loopback).
    ``provenance``: the record each PNG carries (in a zip, with the image's index and label)."""
    if fmt == "png":  # zlib level 1: ~4x faster than the default for ~10% more bytes, on a response path
        return File("samples.png", "image/png", grid_png(images, compress_level=1, provenance=provenance))
    if fmt == "npz":
        buf = io.BytesIO()
        arrays = {"images": images.permute(0, 2, 3, 1).contiguous().numpy()}
        if labels is not None:
            arrays["labels"] = labels.numpy()
        (np.savez_compressed if compress else np.savez)(buf, **arrays)
        return File("samples.npz", "application/octet-stream", buf.getvalue())
    if fmt == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for i, image in enumerate(images):
                label = int(labels[i]) if labels is not None else None
                folder = ""
                if class_names and label is not None:  # a model's class name, never a path inside the zip
                    folder = str(class_names[label]).replace("/", "_").replace("\\", "_").strip()
                    folder = folder if folder not in ("", ".", "..") else str(label)
                one = provenance.replace(index=i, label=label) if provenance is not None else None
                z.writestr(f"{folder + '/' if folder else ''}{i:06d}.png", png_bytes(image, provenance=one))
        return File("samples.zip", "application/zip", buf.getvalue())
    raise ValueError(f"format must be png, zip or npz, got {fmt!r}")


def strip_and_gif(frames: torch.Tensor, stem: str = "interpolation") -> list[File]:
    """Frames (T, C, H, W) uint8 as a one-row PNG strip and a looping GIF."""
    return [File(f"{stem}.png", "image/png", grid_png(frames, nrow=frames.shape[0])),
            File(f"{stem}.gif", "image/gif", gif_bytes(frames, duration_ms=90))]


def traversal(pipe: Pipeline, *, dims: list[int] | None, seed: int, label: int | None, span: float,
              steps: int) -> File:
    from atelier.creative.traverse import traverse

    pipe._require("interpolate")
    values = torch.linspace(-span, span, steps).tolist()
    with torch.no_grad():
        images, _dims, _info = traverse(pipe.model, dims=dims, values=values, seed=seed, label=label, max_rows=10)
    return File("traversal.png", "image/png", grid_png(as_uint8(images), nrow=steps))



def reconstruction(pipe: Pipeline, image: torch.Tensor) -> tuple[File, list[float]]:
    recon = pipe.reconstruct(image[None])
    mean, _ = pipe.encode(image[None])
    pair = torch.cat([image[None], recon])
    return File("reconstruction.png", "image/png", grid_png(pair, nrow=2)), [float(v) for v in mean[0]]


def image_interpolation(pipe: Pipeline, a: torch.Tensor, b: torch.Tensor, steps: int) -> list[File]:
    from atelier.creative.interpolate import interpolate_images
    from atelier.data.base import to_float

    pipe._require("reconstruct")
    with torch.no_grad():
        frames = interpolate_images(pipe.model, to_float(a[None])[0], to_float(b[None])[0], steps)
    return strip_and_gif(as_uint8(frames), "image-interpolation")


def stylized(pipe: Pipeline, image: torch.Tensor, strength: float) -> File:
    out = pipe.stylize(image, strength=strength)
    return File("stylized.png", "image/png", png_bytes((out.clamp(0, 1) * 255).round().to(torch.uint8)))


def translated(pipe: Pipeline, images: torch.Tensor, direction: str) -> File:
    out = pipe.translate(images, direction)
    if out.shape[0] == 1:
        pair = [images[0], out[0]]
        if pair[0].shape[0] != pair[1].shape[0]:
            pair = [p.repeat(3 // p.shape[0], 1, 1) for p in pair]
        return File("translated.png", "image/png", grid_png(torch.stack(pair), nrow=2))
    return File("translated.png", "image/png", grid_png(out))


def edited(pipe: Pipeline, image: torch.Tensor, *, strength: float, label: int | None, seed: int,
           options: dict) -> File:
    """A flow model's edit of one uint8 image (C, R, R): the input and its edit side by side."""
    out = pipe.edit(image[None], strength=strength, labels=label, seed=seed, **options)
    return File("edit.png", "image/png", grid_png(torch.cat([image[None], out]), nrow=2))


def inpainted(pipe: Pipeline, image: torch.Tensor, mask: torch.Tensor, *, n: int, label: int | None, seed: int,
              options: dict) -> File:
    """``n`` fills (seeds ``seed``, ``seed + 1``, ...) of the hole ``mask`` (1, 1, R, R) in one uint8 image,
    after the input with its hole greyed, in one row."""
    fills = [pipe.inpaint(image[None], mask, labels=label, seed=seed + i, **options) for i in range(n)]
    return File("inpaint.png", "image/png", grid_png(torch.cat([show_hole(image[None], mask), *fills]), nrow=n + 1))


def gatys(content: torch.Tensor, style: torch.Tensor, *, steps: int, size: int, seed: int,
          on_progress: Callable[[int, int, bytes | None], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> File:
    """Gatys transfer of ``content`` (3, H, W) in [0, 1] with ``style``. ``on_progress(done, planned,
    preview PNG or None)`` reports the iterations and, every tenth of the way, the image so far;
    :class:`~atelier.signals.Stopped` when ``should_stop`` ended it."""
    from atelier.signals import Stopped
    from atelier.style import GatysConfig, feature_network, stylize_gatys
    from atelier.style.gatys import iterations_planned

    cfg = GatysConfig(size=size, steps=steps, coarse_steps=max(1, steps // 2), seed=seed,
                      frame_every=max(1, steps // 10))
    planned = iterations_planned(cfg)
    net = feature_network(cfg, download=False)  # the cached VGG-19, else a named random fallback
    done = [0]

    def stop() -> bool:
        done[0] += 1
        if on_progress is not None:
            on_progress(done[0], planned, None)
        return bool(should_stop and should_stop())

    def frame(image: torch.Tensor) -> None:
        if on_progress is not None:
            on_progress(done[0], planned, png_bytes((image.clamp(0, 1) * 255).round().to(torch.uint8)))

    result = stylize_gatys(content, style, cfg, features=net, progress=False, should_stop=stop, on_frame=frame)
    if result.stopped:
        raise Stopped(f"after {done[0]} of about {planned} iterations")
    return File("stylized.png", "image/png", png_bytes((result.image.clamp(0, 1) * 255).round().to(torch.uint8)))
