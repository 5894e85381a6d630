"""Fast style transfer: stylise in a single pass with a trained feed-forward network.

Training is the ``fast-style`` family on the one trainer (:mod:`atelier.train.steps.fast_style`:
``atelier train fast-style`` or ``atelier style train``); :func:`train_fast_style` is its Python
shortcut. A run directory is laid out like every other family's (``checkpoints/``, ``samples/``,
``history.jsonl``, ``config.json``) and loads anywhere a model is expected
(``TransformerNet.from_pretrained(RUN)``, ``atelier stylize --model RUN``, the pipeline façade).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import torch
from tqdm import tqdm

from atelier.config import Probability, check_value, split_settings
from atelier.data.base import DataError
from atelier.data.images import output_names, read_image, scan_images
from atelier.device import check_device, check_precision
from atelier.device import autocast as device_autocast
from atelier.models.transformer_net import TransformerNet, TransformerNetConfig
from atelier.signals import ShouldStop
from atelier.train.run import TrainResult, resume_run, saved_run_config, train_model
from atelier.train.steps.fast_style import FastStyleDataConfig, FastStyleTrainConfig

#: The longest side an input is resized to before it is stylised (a typo of 10x is refused, not allocated).
MAX_SIZE = 8192

_SHOWN = 5


def train_fast_style(out_dir: str | os.PathLike, *, style: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                     net: TransformerNetConfig | None = None, resume: bool = False, overwrite: bool = False,
                     features: torch.nn.Module | None = None, **settings: Any) -> TrainResult:
    """Train a fast-style network into the run directory ``out_dir`` (or continue it with ``resume``).

    ``settings`` are fields of :class:`FastStyleDataConfig` (``content_dir``, ``size``, ...) and
    :class:`FastStyleTrainConfig` (``steps``, ``lr``, ``style_weight``, ``weights``, ...); ``net`` the
    network's config (default: the ``fast`` preset). With ``resume`` the saved configs are used and
    ``settings`` may change only the training ones (e.g. more ``steps``). ``features`` replaces the VGG
    feature network (tests, custom extractors).
    """
    options = {"features": features} if features is not None else None
    saved = saved_run_config(out_dir)
    if resume:
        if saved is None:
            raise FileNotFoundError(f"{out_dir}: nothing to resume (no checkpoint found under {out_dir}/checkpoints)")
        if net is not None and dataclasses.asdict(net) != saved["model"]["config"]:
            raise ValueError(f"{out_dir} holds a {saved['model']['config']} network, not the configured {net}; "
                             "resume without net= (the saved network is used)")
        _, train_given = split_settings(settings, FastStyleDataConfig, FastStyleTrainConfig)
        return resume_run(out_dir, train_given, setup_options=options)
    data_given, train_given = split_settings(settings, FastStyleDataConfig, FastStyleTrainConfig)
    data = FastStyleDataConfig(style=[] if style is None else style, **data_given)
    model_kwargs = vars(net or TransformerNetConfig()).copy()
    return train_model("transformer-net", data=data, train=FastStyleTrainConfig(**train_given), out=out_dir,
                       model_kwargs=model_kwargs, setup_options=options, overwrite=overwrite)


def load_fast_style_model(model: str | os.PathLike | TransformerNet, *,
                          device: str | torch.device | None = None) -> TransformerNet:
    """A trained network (eval mode) from a model directory, a checkpoint, or a network already loaded
    (moved to ``device`` if one is given)."""
    if isinstance(model, TransformerNet):
        return (model if device is None else model.to(device)).eval()
    return TransformerNet.from_pretrained(model, map_location=device or "cpu")


def stylize_with_model(model: str | os.PathLike | TransformerNet, image: torch.Tensor, strength: float = 1.0, *,
                       precision: str = "fp32", batch_size: int = 8) -> torch.Tensor:
    """Stylise (3, H, W) or (B, 3, H, W) images in [0, 1]; returns the same shape, in [0, 1].

    ``strength`` in [0, 1] blends the stylised output with the content (0: the content unchanged,
    1: the network's output). ``precision`` "bf16" is about 1.5x faster on CPUs with native bf16
    and differs from "fp32" by a few 8-bit levels at most.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    check_precision(precision)
    single = image.dim() == 3
    x = image[None] if single else image
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (3, H, W) or (B, 3, H, W) images, got {tuple(image.shape)}")
    x = x.float().expand(-1, 3, -1, -1)
    if strength == 0.0:
        out = x.clone()
    else:
        net = load_fast_style_model(model)
        device = next(net.parameters()).device
        net = net.to(memory_format=torch.channels_last)
        autocast = partial(device_autocast, precision, device)
        chunks = []
        with torch.inference_mode(), autocast():
            for chunk in x.split(batch_size):
                y = net(chunk.to(device).contiguous(memory_format=torch.channels_last))
                chunks.append(y.float().cpu().contiguous())
        out = torch.cat(chunks).to(x.device)
        if strength != 1.0:
            out = torch.lerp(x, out, strength)
    return out[0] if single else out


@dataclass
class StylizeReport:
    written: list[Path]
    skipped: list[tuple[Path, str]]  # (input file, why)
    total: int = 0  # input images found
    stopped: bool = False  # ``should_stop`` ended the loop early; every file in ``written`` is complete


def _plan_outputs(inputs: Sequence[str | os.PathLike], out_dir: Path) -> list[tuple[Path, Path]]:
    """(input file, output PNG) pairs: a folder's images keep their sub-folder structure under
    ``out_dir``; a file goes to ``out_dir/<name>.png`` (see :func:`atelier.data.images.output_names`)."""
    found: list[tuple[Path, Path]] = []  # (input, path relative to the output folder, with its extension)
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files = scan_images(path)
            if not files:
                warnings.warn(f"no images found in folder {path}", stacklevel=3)
            found += [(f, f.relative_to(path)) for f in files]
        elif path.exists():
            found.append((path, Path(path.name)))
        else:
            raise FileNotFoundError(f"{path}: no such image file or folder")
    names = output_names([rel for _, rel in found])
    return [(src, out_dir / name) for (src, _), name in zip(found, names)]


def stylize_paths(model: str | os.PathLike | TransformerNet, inputs: Sequence[str | os.PathLike],
                  out_dir: str | os.PathLike, *, strength: float = 1.0, size: int | None = None,
                  batch_size: int = 1, precision: str = "fp32", device: str | torch.device = "cpu",
                  progress: bool = True, should_stop: ShouldStop | None = None) -> StylizeReport:
    """Stylise image files and folders (recursively) into ``out_dir`` as PNGs, written atomically.

    ``size`` resizes each image so its longer side is ``size`` first (default: full size). Images of
    equal size are stylised ``batch_size`` at a time (on a CPU one at a time is fastest per image;
    batches pay off on a GPU). Unreadable files are named in one warning and skipped; the report
    lists what was written and what was skipped. ``should_stop`` is asked before each image; when it
    returns True the loop ends there (images read but not yet stylised are dropped) and the report
    says ``stopped``: what is in ``written`` is complete (each PNG is written atomically).
    """
    from atelier.data.images import save_image

    size = None if size is None else check_value(size, Annotated[int, at.Interval(ge=1, le=MAX_SIZE)], "size")
    batch_size = check_value(batch_size, Annotated[int, at.Interval(ge=1, le=1024)], "batch_size")
    strength = check_value(strength, Probability, "strength")
    net = load_fast_style_model(model, device=check_device(device))
    pairs = _plan_outputs(inputs, Path(out_dir))
    written, skipped = [], []
    stopped = False
    pending: list[tuple[Path, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        styled = stylize_with_model(net, torch.stack([im for _, im in pending]), strength,
                                    precision=precision, batch_size=batch_size)
        for (dst, _), image in zip(pending, styled):
            written.append(save_image(image * 2 - 1, dst))
        pending.clear()

    for src, dst in tqdm(pairs, desc="stylize", unit="img", disable=not progress):
        if should_stop is not None and should_stop():
            stopped = True
            pending.clear()
            break
        try:
            image = read_image(src, size=size)
        except (DataError, OSError) as exc:
            skipped.append((src, str(exc)))
            continue
        if pending and (len(pending) == batch_size or pending[0][1].shape != image.shape):
            flush()
        pending.append((dst, image))
    flush()
    if skipped:
        shown = "; ".join(f"{p} ({why})" for p, why in skipped[:_SHOWN])
        more = f" and {len(skipped) - _SHOWN} more" if len(skipped) > _SHOWN else ""
        warnings.warn(f"skipped {len(skipped)} unreadable image(s): {shown}{more}", stacklevel=2)
    return StylizeReport(written, skipped, total=len(pairs), stopped=stopped)
