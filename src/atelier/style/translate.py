"""Translation entry points for trained CycleGANs: tensors in, tensors out; or files in, PNG files out.

    >>> model = load_pretrained("runs/thick")
    >>> out = translate_images(model, images, "a2b")                  # (N, C_b, R, R) in [-1, 1]
    >>> report = translate_paths(model, "photos/", "translated/")     # keeps the sub-folder structure

Images are brought to the model's input the way its training data was: turned upright, converted to
its channels (grey <-> RGB), resized so the shorter side is the training resolution (or ``size``)
and centre-cropped. Unreadable files are named in the report and skipped; every PNG is written
atomically, so an interruption leaves no half-written file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from atelier.data import DataError, to_float, to_uint8
from atelier.data.images import IMAGE_EXTENSIONS, strict_pil, decode_image, scan_images
from atelier.data.resize import convert_channels
from atelier.data.images import output_names, png_bytes
from atelier.signals import ShouldStop


@dataclass
class TranslationReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input file, why it was skipped)
    total: int = 0  # input images found
    stopped: bool = False  # ``should_stop`` ended the loop early; every file in ``written`` is complete


def translate_images(model, images: torch.Tensor, direction: str = "a2b", *, batch_size: int = 64,
                     use_ema: bool = True) -> torch.Tensor:
    """(N, C, H, W) images, uint8 or float in [-1, 1], any channel count -> the model's translation
    (N, C_out, H, W) float in [-1, 1]. Channels are converted to what ``direction`` expects."""
    if images.dtype == torch.uint8:
        images = convert_channels(images, model.input_channels(direction))
        images = to_float(images)
    elif images.shape[1] != model.input_channels(direction):
        images = to_float(convert_channels(to_uint8(images), model.input_channels(direction)))
    return model.translate(images, direction, batch_size=batch_size, use_ema=use_ema)


def translate_paths(model, source: str | os.PathLike, out_dir: str | os.PathLike, *, direction: str = "a2b",
                    size: int | None = None, batch_size: int = 32, use_ema: bool = True,
                    progress: bool = False, should_stop: ShouldStop | None = None) -> TranslationReport:
    """Translate an image file, or every image under a folder (recursively), into PNGs under ``out_dir``
    that keep the folder structure. ``size``: side of the square the images are brought to (default:
    the model's training resolution; any multiple of 2**n_downsampling works). ``use_ema``: translate
    with the moving average of the generator weights (default) or the raw weights. ``should_stop`` is asked
    before each batch; when it returns True the loop ends there and the report says ``stopped``."""
    from atelier.io import atomic_write_bytes

    source, out_dir = Path(source).expanduser(), Path(out_dir).expanduser()
    size = size or model.config.resolution
    factor = 2**model.config.n_downsampling
    if size < factor or size % factor:
        raise ValueError(f"size {size} must be a positive multiple of {factor} for this model")
    if source.is_dir():
        inputs, root = scan_images(source), source
        if not inputs:
            raise DataError(f"no images found under {source} (searched recursively for {', '.join(IMAGE_EXTENSIONS)})")
    elif source.is_file():
        inputs, root = [source], None
    else:
        raise FileNotFoundError(f"{source}: no such file or folder")
    rels = [path.relative_to(root) if root is not None else Path(path.name) for path in inputs]
    targets = [out_dir / name for name in output_names(rels)]
    report = TranslationReport(total=len(inputs))
    c_in = model.input_channels(direction)
    bar = tqdm(total=len(inputs), desc=f"translate {direction}", unit="img", disable=not progress)
    for start in range(0, len(inputs), batch_size):
        if should_stop is not None and should_stop():
            report.stopped = True
            break
        batch, batch_targets = [], []
        with strict_pil():
            for path, target in zip(inputs[start : start + batch_size], targets[start : start + batch_size]):
                try:
                    array = decode_image(path, size)  # (R, R) grey or (R, R, 3) RGB, uint8
                except Exception as exc:  # noqa: BLE001 - any failure to decode is this file's fault
                    why = str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
                    report.failed.append((path, why))
                    continue
                image = torch.from_numpy(array.copy())
                image = image[None] if image.dim() == 2 else image.permute(2, 0, 1)  # (C, R, R)
                batch.append(convert_channels(image[None], c_in)[0])
                batch_targets.append(target)
        if batch:
            translated = to_uint8(translate_images(model, torch.stack(batch), direction, batch_size=batch_size,
                                                         use_ema=use_ema))
            for image, target in zip(translated, batch_targets):
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target, png_bytes(image))
                report.written.append(target)
        bar.update(min(batch_size, len(inputs) - start))
    bar.close()
    return report
