"""Fast style transfer: train a feed-forward network for one style, then stylise in a single pass.

Johnson et al. (2016) train a :class:`~atelier.models.transformer_net.TransformerNet` on a folder of
content photos with the perceptual losses of Gatys et al.: its output must keep the VGG features of
the photo (content loss) and take on the Gram matrices of the style image (style loss), plus a small
total-variation prior. Training takes minutes to hours; stylising then costs one forward pass.

A model directory (``MODEL_DIR``) holds::

    config.json, model.safetensors   the trained network (``TransformerNet.from_pretrained``) and,
                                     under "fast_style", the :class:`FastStyleConfig` that made it
    checkpoints/step_*/, latest      network + Adam state for ``resume=True``
    history.jsonl, loss_curve.png    the losses every ``log_every`` steps
    preview.png                      content crops (top row) and their stylisations (bottom row)

Losses are relative errors, as in :mod:`atelier.style.gatys`: each content layer's squared error is
divided by the mean square of the target activations and each style layer's by the mean square of
the target Gram entries, so the weights mean the same for any layer, image size and feature network.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from atelier.config import environment, from_dict, load_json, to_dict
from atelier.data.base import DataError
from atelier.data.folder import read_image, scan_images
from atelier.models.transformer_net import TransformerNet, TransformerNetConfig
from atelier.models.vgg_weights import describe, load_vgg
from atelier.objectives.style import blend_grams, content_loss, gram_matrix, style_loss, total_variation
from atelier.train.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    latest_checkpoint,
    load_tensors,
    load_train_state,
    prune_checkpoints,
    save_checkpoint,
    set_latest,
)
from atelier.train.config import resolve_precision

#: Johnson et al.'s layers of VGG-16: content from relu2_2, style from four depths, equally weighted.
JOHNSON_CONTENT_LAYERS = {"relu2_2": 1.0}
JOHNSON_STYLE_LAYERS = {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0}
DEFAULT_STEPS = 2000  # when none of steps / epochs / minutes is given
PRECISIONS = ("auto", "fp32", "bf16")
_CACHE_BYTES = 512 * 2**20  # keep decoded content photos in memory up to this much
_SHOWN = 5


@dataclass
class FastStyleConfig:
    """Everything one fast-style training run needs; saved in the model's config.json.

    Field names follow the CLI flags: ``--style``, ``--content-dir``, ``--size``, ``--steps``, ...
    """

    style: list[str] = field(default_factory=list)  # style image path(s); several are blended
    content_dir: str = ""  # folder of content photos, searched recursively ("": scikit-image's photos)
    size: int = 256  # training crops are size x size (CPUs: 128 is four times cheaper)
    batch_size: int = 4
    steps: int | None = None  # total optimisation steps (a resumed run continues up to it)
    epochs: float | None = None  # passes over the content folder, if steps is not given
    minutes: float | None = None  # wall-clock budget of this session (stops early, checkpoints)
    lr: float = 1e-3
    content_weight: float = 1.0
    style_weight: float = 10.0
    tv_weight: float = 1e-3
    content_layers: dict[str, float] = field(default_factory=lambda: dict(JOHNSON_CONTENT_LAYERS))
    style_layers: dict[str, float] = field(default_factory=lambda: dict(JOHNSON_STYLE_LAYERS))
    style_blend: list[float] | None = None  # weights of several style images (default: equal)
    style_size: int | None = None  # longer side of the style image(s); default: size
    crop_scale: float = 0.67  # random crops cover this fraction (up to all) of a photo's shorter side
    arch: str = "vgg16"
    pool: str = "max"
    precision: str = "auto"  # of the feature network: auto (bf16 where the CPU has it) | fp32 | bf16
    net: TransformerNetConfig = field(default_factory=TransformerNetConfig)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.style, (str, os.PathLike)):
            self.style = [str(self.style)]
        self.style = [str(s) for s in self.style]
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.size < 16 or self.batch_size < 1:
            raise ValueError(f"size must be >= 16 and batch_size >= 1, got {self.size}, {self.batch_size}")
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        for name in ("steps", "epochs", "minutes"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not self.style_layers:
            raise ValueError("give at least one style layer")
        if self.style_blend is not None and len(self.style_blend) != len(self.style):
            raise ValueError(f"{len(self.style)} style images but {len(self.style_blend)} style_blend weights")

    def total_steps(self, n_images: int) -> int | None:
        """Steps to train: ``steps``, else ``epochs`` over ``n_images``, else None (minutes) or the default."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * n_images / self.batch_size))
        return None if self.minutes is not None else DEFAULT_STEPS


@dataclass
class FastStyleResult:
    model_dir: Path
    steps: int  # total steps trained (including earlier sessions when resumed)
    seconds: float  # this session
    history: list[dict[str, float]]
    feature_network: str  # e.g. "vgg16 (ImageNet)" or "vgg16 (random weights)"


# ------------------------------------------------------------------------------------- feature net


def feature_network(cfg: FastStyleConfig, *, weights: str | os.PathLike | None = None, download: bool = True,
                    fallback: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """The VGG feature network of ``cfg``, cut after its deepest loss layer (see ``load_vgg``)."""
    layers = list(dict.fromkeys([*cfg.content_layers, *cfg.style_layers]))
    return load_vgg(cfg.arch, layers, weights=weights, pool=cfg.pool, download=download, fallback=fallback,
                    device=device)


def _content_network(features: nn.Module, layers: Sequence[str]) -> nn.Module:
    """``features`` cut after the content layers, sharing its weights, when it is a VGG that reaches deeper.

    The content targets need only the shallow layers (Johnson's relu2_2 is a third of the cost of
    relu4_3), so this saves about a tenth of a training step."""
    from atelier.models.vgg import VGGFeatures

    if type(features) is not VGGFeatures or not layers:
        return features
    cut = VGGFeatures(features.arch, layers, pool=features.pool)
    if cut.depth >= features.depth:
        return features
    mine = cut.state_dict()
    cut.load_state_dict({k: v for k, v in features.state_dict().items() if k in mine})
    cut.pretrained = features.pretrained
    p = next(features.parameters())
    return cut.to(p.device).eval().requires_grad_(False).to(memory_format=torch.channels_last)


def _autocast(precision: str, device: torch.device) -> Callable[[], Any]:
    if resolve_precision(precision, device) == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


class FastStyleLoss(nn.Module):
    """Perceptual loss of a batch of outputs against their content images and the fixed style Grams."""

    def __init__(self, features: nn.Module, styles: Sequence[torch.Tensor], cfg: FastStyleConfig, *,
                 autocast: Callable[[], Any] = contextlib.nullcontext) -> None:
        super().__init__()
        self.features, self.cfg, self._autocast = features, cfg, autocast
        self.content_features = _content_network(features, list(cfg.content_layers))
        with torch.no_grad():
            grams = []
            for s in styles:  # (3, h, w) each
                f = self._features(s[None])
                grams.append({n: gram_matrix(f[n]) for n in cfg.style_layers})
            self.style_targets = blend_grams(grams, cfg.style_blend)
        total = sum(cfg.style_layers.values()) or 1.0
        self.style_weights = {
            n: cfg.style_weight * (w / total) / (self.style_targets[n].pow(2).mean().item() + 1e-12)
            for n, w in cfg.style_layers.items()
        }

    def _features(self, x: torch.Tensor, net: nn.Module | None = None) -> dict[str, torch.Tensor]:
        with self._autocast():
            return (self.features if net is None else net)(x)

    def forward(self, output: torch.Tensor, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """Terms for (B, 3, H, W) outputs and contents in [0, 1]: loss = content + style + tv."""
        cfg = self.cfg
        zero = output.new_zeros((), dtype=torch.float32)
        f = self._features(output)
        terms = {"content": zero, "style": style_loss(f, self.style_targets, self.style_weights)}
        if cfg.content_layers and cfg.content_weight:
            with torch.no_grad():
                f_c = self._features(content, self.content_features)
                target = {n: f_c[n].float() for n in cfg.content_layers}
            weights = {n: cfg.content_weight * w / (target[n].pow(2).mean().item() + 1e-12)
                       for n, w in cfg.content_layers.items()}
            terms["content"] = content_loss(f, target, weights)
        terms["tv"] = cfg.tv_weight * total_variation(output.float()) if cfg.tv_weight else zero
        terms["loss"] = terms["content"] + terms["style"] + terms["tv"]
        return terms


# ------------------------------------------------------------------------------------ content data


class ContentSampler:
    """Batches of random square crops from a folder of photos of any sizes, a pure function of the step.

    Image j of the stream (j = step * batch + k) is photo ``perm_e[j mod N]`` of epoch e = j // N,
    with a seeded permutation per epoch, so a resumed run sees the same images. Each photo is first
    shrunk so its shorter side is at most size / crop_scale; a crop covering crop_scale..1 of that
    side is resized to size x size and flipped at random. Unreadable files are named in a warning
    and replaced by the next photo.
    """

    def __init__(self, files: Sequence[Path], size: int, *, seed: int, crop_scale: float) -> None:
        self.files, self.size, self.seed, self.crop_scale = list(files), size, seed, crop_scale
        self.bad: set[Path] = set()
        self._cache: dict[Path, torch.Tensor] = {}
        self._cached_bytes = 0
        self._epoch, self._perm = -1, []

    def __len__(self) -> int:
        return len(self.files)

    def load(self, path: Path) -> torch.Tensor:
        """(3, H, W) uint8, shorter side at most size / crop_scale; cached while memory allows."""
        if path in self._cache:
            return self._cache[path]
        image = read_image(path)  # (3, H, W) float in [0, 1]; raises DataError naming the file
        limit = math.ceil(self.size / self.crop_scale)
        scale = limit / min(image.shape[-2:])
        if scale < 1:
            new = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
            image = F.interpolate(image[None], size=new, mode="bilinear", antialias=True, align_corners=False)[0]
        image = image.mul(255).round_().clamp_(0, 255).to(torch.uint8)
        if self._cached_bytes + image.numel() <= _CACHE_BYTES:
            self._cache[path] = image
            self._cached_bytes += image.numel()
        return image

    def _index(self, j: int) -> int:
        epoch, pos = divmod(j, len(self.files))
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.files), generator=g).tolist()
        return self._perm[pos]

    def _crop(self, image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        h, w = image.shape[-2:]
        u = torch.rand(4, generator=g).tolist()
        side = max(1, round(min(h, w) * (self.crop_scale + (1 - self.crop_scale) * u[0])))
        top, left = int(u[1] * (h - side + 1)), int(u[2] * (w - side + 1))
        crop = image[None, :, top : top + side, left : left + side].float() / 255
        crop = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=side > self.size,
                             align_corners=False).clamp_(0, 1)
        return crop.flip(-1) if u[3] < 0.5 else crop

    def photo(self, j: int) -> tuple[Path, torch.Tensor]:
        """(path, image) of stream position j, skipping unreadable files (each named in one warning)."""
        for offset in range(len(self.files)):
            path = self.files[self._index(j + offset)]
            if path in self.bad:
                continue
            try:
                return path, self.load(path)
            except (DataError, OSError) as exc:
                self.bad.add(path)
                warnings.warn(f"skipping unreadable content image {path}: {exc}", stacklevel=3)
        raise DataError(f"none of the {len(self.files)} content images could be read "
                        f"(first ones: {', '.join(str(p) for p in self.files[:_SHOWN])})")

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """(batch_size, 3, size, size) float in [0, 1]."""
        g = torch.Generator().manual_seed(self.seed * 7_919 + step)
        return torch.cat([self._crop(self.photo(step * batch_size + k)[1], g) for k in range(batch_size)])

    def preview(self, n: int = 4) -> torch.Tensor:
        """(n', 3, size, size) centre crops of the first readable photos, for preview grids."""
        crops = []
        for path in self.files:
            if len(crops) == n:
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    image = self.load(path).float()[None] / 255
                except (DataError, OSError):
                    continue
            side = min(image.shape[-2:])
            top, left = (image.shape[-2] - side) // 2, (image.shape[-1] - side) // 2
            crop = image[..., top : top + side, left : left + side]
            crops.append(F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True,
                                       align_corners=False).clamp(0, 1))
        if not crops:
            raise DataError(f"none of the {len(self.files)} content images could be read")
        return torch.cat(crops)


def content_files(content_dir: str | os.PathLike) -> list[Path]:
    """Image files under ``content_dir`` (recursive); "" means the photos bundled with scikit-image."""
    if not str(content_dir):
        from atelier.data.photos import photo_paths

        files = photo_paths()
        warnings.warn(f"no content_dir given: training on the {len(files)} photos bundled with scikit-image; "
                      "for a model that generalises, point content_dir at COCO or your own photos", stacklevel=3)
        return files
    root = Path(content_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"content_dir {str(content_dir)!r} is not a folder; point it at a folder of photos "
                        "(COCO or your own), or leave it empty for the photos bundled with scikit-image")
    files = scan_images(root)
    if not files:
        raise DataError(f"no images found in {root} (searched recursively for PNG/JPEG/WebP/BMP)")
    return files


# ---------------------------------------------------------------------------------------- training


def saved_fast_style_config(model_dir: str | os.PathLike) -> FastStyleConfig:
    """The :class:`FastStyleConfig` saved with a model or its newest checkpoint (for ``--resume``)."""
    ckpt = latest_checkpoint(Path(model_dir) / "checkpoints") or latest_checkpoint(Path(model_dir))
    if ckpt is None:
        raise FileNotFoundError(f"{model_dir}: no fast-style model or checkpoint here")
    saved = load_json(ckpt / "config.json")
    if "fast_style" not in saved:
        raise ValueError(f"{ckpt}: not a fast-style model (config.json has no 'fast_style' section)")
    return from_dict(FastStyleConfig, saved["fast_style"])


def train_fast_style(cfg: FastStyleConfig, out_dir: str | os.PathLike, *, resume: bool = False,
                     progress: bool = True, features: nn.Module | None = None,
                     weights: str | os.PathLike | None = None, download: bool = True, fallback: bool = True,
                     device: str | torch.device = "cpu") -> FastStyleResult:
    """Train a fast-style network into ``out_dir`` (see the module docstring for what is written).

    Args:
        cfg: the run; ``cfg.style`` is required.
        resume: continue from ``out_dir``'s newest checkpoint (the network config must be the same);
            the length settings of ``cfg`` apply (``steps`` counts from the start of the first session).
        features: a feature network to use instead of loading VGG (tests, custom extractors).
        weights, download, fallback: where VGG weights come from (see ``load_vgg``).
    """
    if not cfg.style:
        raise ValueError("give at least one style image (style=[...])")
    device = torch.device(device)
    out = Path(out_dir)
    ckpt_root = out / "checkpoints"
    sampler = ContentSampler(content_files(cfg.content_dir), cfg.size, seed=cfg.seed, crop_scale=cfg.crop_scale)
    styles = [read_image(p, size=cfg.style_size or cfg.size) for p in cfg.style]

    torch.manual_seed(cfg.seed)
    net = TransformerNet(cfg.net).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    step, elapsed, history = 0, 0.0, []
    if not resume and latest_checkpoint(ckpt_root) is not None:
        raise FileExistsError(f"{out} already holds a training run; pass resume=True to continue it, "
                              "or train into a new (or emptied) directory")
    if resume:
        ckpt = latest_checkpoint(ckpt_root)
        if ckpt is None:
            raise FileNotFoundError(f"{out}: nothing to resume (no checkpoint under {ckpt_root})")
        saved = from_dict(FastStyleConfig, load_json(ckpt / "config.json")["fast_style"])
        if saved.net != cfg.net:
            raise ValueError(f"{ckpt} holds a {saved.net} network, not the configured {cfg.net}; "
                             "resume with the saved config (saved_fast_style_config)")
        net.load_state_dict(load_tensors(ckpt / "model.safetensors"))
        state = load_train_state(ckpt)
        opt.load_state_dict(state["optimizer"])
        step, elapsed = int(state["step"]), float(state.get("elapsed_seconds", 0.0))
        sampler.bad = {Path(p) for p in state.get("bad_files", [])}
        history = [h for h in _read_history(out / "history.jsonl") if h["step"] <= step]

    if features is None:
        features = feature_network(cfg, weights=weights, download=download, fallback=fallback, device=device)
    features = features.to(device).eval().requires_grad_(False).to(memory_format=torch.channels_last)
    objective = FastStyleLoss(features, [s.to(device) for s in styles], cfg, autocast=_autocast(cfg.precision, device))
    preview = sampler.preview().to(device)
    run_config = {"model": net.model_config_dict(), "fast_style": to_dict(cfg), "environment": environment(),
                  "feature_network": describe(features), "precision": resolve_precision(cfg.precision, device)}

    def checkpoint() -> None:
        name = f"step_{step:07d}"
        state = {"step": step, "optimizer": opt.state_dict(), "elapsed_seconds": elapsed + time.perf_counter() - start,
                 "bad_files": sorted(str(p) for p in sampler.bad)}
        save_checkpoint(ckpt_root / name, model_state=net.state_dict(), train_state=state, config=run_config)
        set_latest(ckpt_root, name)
        prune_checkpoints(ckpt_root, cfg.keep_checkpoints)
        atomic_write_bytes(out / "history.jsonl", "".join(json.dumps(h) + "\n" for h in history).encode())

    total = cfg.total_steps(len(sampler))
    deadline = time.monotonic() + cfg.minutes * 60 if cfg.minutes is not None else None
    start = time.perf_counter()
    window: dict[str, float] = {}
    window_start, window_steps, last_saved = time.perf_counter(), 0, step if resume else -1
    bar = tqdm(total=total, initial=step, unit="step", disable=not progress, desc=f"fast style {out.name}",
               dynamic_ncols=True)
    net.train()
    try:
        while (total is None or step < total) and (deadline is None or time.monotonic() < deadline):
            x = sampler.batch(step, cfg.batch_size).to(device).contiguous(memory_format=torch.channels_last)
            terms = objective(net(x), x)
            if not torch.isfinite(terms["loss"]):
                from atelier.train.trainer import TrainingDiverged

                kept = latest_checkpoint(ckpt_root)
                bad = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
                raise TrainingDiverged(
                    f"fast-style training diverged at step {step + 1} ({bad}); "
                    f"{f'the last good checkpoint is kept at {kept}' if kept else 'no checkpoint was written'}. "
                    f"Lower lr (now {cfg.lr}) or style_weight (now {cfg.style_weight}), or use precision='fp32'."
                )
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            step += 1
            bar.update(1)
            for k, v in terms.items():
                window[k] = window.get(k, 0.0) + v.item()
            window_steps += 1
            if step % cfg.log_every == 0 or step == total:
                now = time.perf_counter()
                record = {"step": step, **{("loss" if k == "loss" else f"loss_{k}"): v / window_steps
                                           for k, v in window.items()},
                          "images_per_second": window_steps * cfg.batch_size / max(now - window_start, 1e-9)}
                history.append(record)
                bar.set_postfix({k[5:] or "loss": f"{v:.3g}" for k, v in record.items() if k.startswith("loss")})
                window, window_steps, window_start = {}, 0, now
            if step % cfg.checkpoint_every == 0:
                checkpoint()
                last_saved = step
    except KeyboardInterrupt:
        bar.write("interrupted: saving a checkpoint so resume=True can continue")
    finally:
        bar.close()
    if step != last_saved:
        checkpoint()
    net.eval()
    net.save_pretrained(out)
    atomic_write_json(out / "config.json", {**load_json(out / "config.json"), **run_config})
    _write_report(net, preview, history, out)
    return FastStyleResult(out, step, time.perf_counter() - start, history, describe(features))


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_report(net: TransformerNet, preview: torch.Tensor, history: list[dict], out: Path) -> None:
    from atelier.report.grid import make_grid, save_image
    from atelier.report.plots import plot_curves

    with torch.inference_mode():
        styled = net(preview).float().cpu()
    images = torch.cat([preview.cpu(), styled]) * 2 - 1  # [-1, 1] for the grid writer
    save_image(make_grid(images, nrow=len(preview)), out / "preview.png")
    plot_curves(history, out / "loss_curve.png", title=f"fast style: {out.name}")


# --------------------------------------------------------------------------------------- stylising


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
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
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
        autocast = _autocast(precision, device)
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


def _plan_outputs(inputs: Sequence[str | os.PathLike], out_dir: Path) -> list[tuple[Path, Path]]:
    """(input file, output PNG) pairs: a folder's images keep their sub-folder structure under
    ``out_dir``; a file goes to ``out_dir/<stem>.png``. Clashing names get a numeric suffix."""
    pairs, taken = [], set()
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = [(f, f.relative_to(path).with_suffix(".png")) for f in scan_images(path)]
            if not found:
                warnings.warn(f"no images found in folder {path}", stacklevel=3)
        elif path.exists():
            found = [(path, Path(path.stem + ".png"))]
        else:
            raise FileNotFoundError(f"{path}: no such image file or folder")
        for src, rel in found:
            dst, n = out_dir / rel, 2
            while dst in taken:
                dst, n = out_dir / rel.with_name(f"{rel.stem}_{n}.png"), n + 1
            taken.add(dst)
            pairs.append((src, dst))
    return pairs


def stylize_paths(model: str | os.PathLike | TransformerNet, inputs: Sequence[str | os.PathLike],
                  out_dir: str | os.PathLike, *, strength: float = 1.0, size: int | None = None,
                  batch_size: int = 1, precision: str = "fp32", device: str | torch.device = "cpu",
                  progress: bool = True) -> StylizeReport:
    """Stylise image files and folders (recursively) into ``out_dir`` as PNGs, written atomically.

    ``size`` resizes each image so its longer side is ``size`` first (default: full size). Images of
    equal size are stylised ``batch_size`` at a time (on a CPU one at a time is fastest per image;
    batches pay off on a GPU). Unreadable files are named in one warning and skipped; the report
    lists what was written and what was skipped.
    """
    from atelier.report.grid import save_image

    net = load_fast_style_model(model, device=device)
    pairs = _plan_outputs(inputs, Path(out_dir))
    written, skipped = [], []
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
    return StylizeReport(written, skipped)
