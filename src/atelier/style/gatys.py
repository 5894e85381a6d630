"""Neural style transfer by optimisation (Gatys, Ecker & Bethge 2016), coarse to fine.

The output image itself is optimised so that its VGG features match the content photo's (content
loss) and its Gram matrices match the style image's (style loss), plus a total-variation prior.

What makes it fast on a CPU, compared with the textbook single-scale loop:
- the feature network is cut after the deepest layer a loss reads (``relu5_1`` for the defaults);
- coarse to fine: most iterations run at a half or quarter of the output size, where one VGG pass
  costs a quarter or a sixteenth; each scale starts from the previous result, upsampled;
- bf16 autocast for the feature network where the CPU (or GPU) computes bf16 natively; the losses
  and the image being optimised stay float32;
- the targets (content features, style Grams) are computed once per scale.

Losses are normalised by their targets' magnitude (see :class:`StyleLoss`), so one set of weights
works for any image size, any layer and either feature network (real VGG or the random fallback).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from atelier.device import autocast as device_autocast
from atelier.objectives.style import blend_grams, content_loss, gram_matrix, style_loss, total_variation
from atelier.style.color import (
    COLOR_MODES,
    combine_luminance,
    luminance,
    match_color_histogram,
    match_luminance,
)

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
#: Gatys et al.'s layers: content from conv4_2 (taken after its ReLU), style from the first ReLU of
#: each block, equally weighted.
DEFAULT_CONTENT_LAYERS = {"relu4_2": 1.0}
DEFAULT_STYLE_LAYERS = {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0, "relu4_1": 1.0, "relu5_1": 1.0}
#: Below this size (longer side) a coarser scale carries too little of the image to be worth running.
MIN_SCALE_SIZE = 64


@dataclass
class GatysConfig:
    """Every knob of one optimisation-based transfer (saved beside outputs so a result is reproducible).

    Sizes are the longer side in pixels; the content's aspect ratio is kept.
    """

    size: int = 512
    steps: int = 100  # iterations at the output size
    scales: int = 3  # coarse-to-fine levels, each half the size of the next (1: single scale)
    coarse_steps: int = 150  # iterations at each coarser level
    optimizer: str = "lbfgs"  # lbfgs | adam
    lr: float | None = None  # default: 1.0 for L-BFGS, 0.02 for Adam (pixels in [0, 1])
    init: str = "content"  # content | noise
    content_weight: float = 1.0
    style_weight: float = 10.0
    tv_weight: float = 1e-3
    content_layers: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CONTENT_LAYERS))
    style_layers: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_STYLE_LAYERS))
    style_scale: float = 1.0  # the style image's longer side, relative to the output's
    style_blend: list[float] | None = None  # weights of several style images (default: equal)
    preserve_colors: str = "none"  # none | luminance | histogram
    arch: str = "vgg19"
    pool: str = "avg"  # avg (Gatys et al.'s choice for synthesis) | max
    precision: str = "auto"  # auto | fp32 | bf16 for the feature network
    seed: int = 0
    frame_every: int = 0  # keep an intermediate image every K iterations (0: none) for a GIF
    target_loss: float | None = None  # stop at the output size once the loss is this low (benchmarks)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if self.preserve_colors not in COLOR_MODES:
            raise ValueError(f"preserve_colors must be one of {COLOR_MODES}, got {self.preserve_colors!r}")
        if self.size < 16:
            raise ValueError(f"size must be at least 16 pixels, got {self.size}")
        if self.steps < 0 or self.coarse_steps < 0 or self.scales < 1:
            raise ValueError("steps and coarse_steps must be >= 0 and scales >= 1")
        if self.style_scale <= 0:
            raise ValueError(f"style_scale must be positive, got {self.style_scale}")
        if not self.content_layers and not self.style_layers:
            raise ValueError("give at least one content or style layer")
        for name, weights in (("content", self.content_layers), ("style", self.style_layers)):
            if any(w < 0 for w in weights.values()):
                raise ValueError(f"{name} layer weights must be >= 0, got {weights}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1.0 if self.optimizer == "lbfgs" else 0.02)

    def scale_sizes(self) -> list[int]:
        """Output sizes of the coarse-to-fine levels, coarsest first (never below MIN_SCALE_SIZE)."""
        sizes = [self.size]
        while len(sizes) < self.scales and sizes[0] // 2 >= MIN_SCALE_SIZE:
            sizes.insert(0, sizes[0] // 2)
        return sizes


@dataclass
class GatysResult:
    """What :func:`gatys_transfer` returns. ``image`` is (3, H, W) in [0, 1] on the CPU."""

    image: torch.Tensor
    history: list[dict[str, float]]  # per iteration: scale size, step, loss and its terms
    frames: torch.Tensor | None  # (T, 3, H, W) intermediate images (all at the output size) or None
    seconds: float
    feature_network: str
    config: GatysConfig


def resize_longer(image: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) or (C, H, W) -> the same with the longer side ``size``, aspect ratio kept.

    Shrinking uses area-aware (antialiased) bicubic resampling; enlarging plain bicubic.
    """
    squeeze = image.dim() == 3
    x = image[None] if squeeze else image
    h, w = x.shape[-2:]
    scale = size / max(h, w)
    new = (max(1, round(h * scale)), max(1, round(w * scale)))
    if new != (h, w):
        x = F.interpolate(x, size=new, mode="bicubic", align_corners=False, antialias=scale < 1).clamp(0, 1)
    return x[0] if squeeze else x


class StyleLoss(nn.Module):
    """The Gatys objective for one output size, with its targets computed once.

    Each content layer's loss is divided by the mean square of its target activations, and each style
    layer's by the mean square of its target Gram entries, so every term is a relative error: the
    weights mean the same at any size and for any feature network.
    """

    def __init__(self, features: nn.Module, content: torch.Tensor, styles: Sequence[torch.Tensor],
                 cfg: GatysConfig, *, mask: torch.Tensor | None = None, autocast: Callable | None = None) -> None:
        super().__init__()
        self.features = features
        self.cfg = cfg
        self.mask = mask
        self._autocast = autocast or contextlib.nullcontext
        with torch.no_grad():
            c = self._features(content) if cfg.content_layers else {}
            self.content_targets = {n: c[n].float() for n in cfg.content_layers}
            grams = []
            for s in styles:
                f = self._features(s)
                grams.append({n: gram_matrix(f[n]) for n in cfg.style_layers})
            self.style_targets = blend_grams(grams, cfg.style_blend) if grams and cfg.style_layers else {}
        eps = 1e-12
        self.content_weights = {
            n: cfg.content_weight * w / (self.content_targets[n].pow(2).mean().item() + eps)
            for n, w in cfg.content_layers.items()
        }
        total_w = sum(cfg.style_layers.values()) or 1.0
        self.style_weights = {
            n: cfg.style_weight * (w / total_w) / (self.style_targets[n].pow(2).mean().item() + eps)
            for n, w in cfg.style_layers.items()
        }

    def _features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with self._autocast():
            return self.features(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss terms for the image ``x`` (1, 3, H, W): ``loss`` = content + style + tv."""
        f = self._features(x)
        terms = {}
        zero = x.new_zeros(())
        terms["content"] = content_loss(f, self.content_targets, self.content_weights) if self.content_weights else zero
        terms["style"] = style_loss(f, self.style_targets, self.style_weights, self.mask) if self.style_weights else zero
        terms["tv"] = self.cfg.tv_weight * total_variation(x) if self.cfg.tv_weight else zero
        terms["loss"] = terms["content"] + terms["style"] + terms["tv"]
        return terms


def _as_batch(image: torch.Tensor, name: str) -> torch.Tensor:
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] not in (1, 3):
        raise ValueError(f"{name} must be one image of shape (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    image = image.float()
    if image.min() < 0 or image.max() > 1:
        raise ValueError(f"{name} must have values in [0, 1], got [{image.min():.3g}, {image.max():.3g}]")
    return image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image


def _optimise(x: torch.Tensor, objective: StyleLoss, cfg: GatysConfig, steps: int, size: int, *,
              is_final: bool, history: list, frames: list, out_hw: tuple[int, int], bar) -> torch.Tensor:
    """Run ``steps`` iterations of the configured optimiser on the pixels ``x`` (1, 3, h, w)."""
    x = x.detach().clone().requires_grad_(True)
    if cfg.optimizer == "lbfgs":
        # One iteration per .step(): the history lives in the optimiser's state between calls, so this
        # is standard L-BFGS with one loss evaluation per iteration (no line search, as neural-style).
        opt = torch.optim.LBFGS([x], lr=cfg.learning_rate, max_iter=1, history_size=50,
                                tolerance_grad=0.0, tolerance_change=0.0)
    else:
        opt = torch.optim.Adam([x], lr=cfg.learning_rate)
    last: dict[str, torch.Tensor] = {}
    # L-BFGS without a line search can overshoot for a step now and then; the best image seen is kept.
    best = {"loss": math.inf, "x": x.detach().clone()}

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        terms = objective(x)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"the style-transfer loss became {loss.item()} at size {size}; lower --lr or use --optimizer adam"
            )
        if loss.item() < best["loss"]:
            best.update(loss=loss.item(), x=x.detach().clone())
        loss.backward()
        last.update({k: v.detach() for k, v in terms.items()})
        return loss

    for i in range(steps):
        opt.step(closure)
        record = {"size": size, "step": i + 1, **{k: float(v) for k, v in last.items()}}
        history.append(record)
        bar.update(1)
        bar.set_postfix(size=size, loss=f"{record['loss']:.4g}")
        if cfg.frame_every and len(history) % cfg.frame_every == 0:
            frames.append(F.interpolate(x.detach().clamp(0, 1), size=out_hw, mode="bilinear", align_corners=False)[0])
        if is_final and cfg.target_loss is not None and record["loss"] <= cfg.target_loss:
            break
    if steps and cfg.optimizer == "lbfgs":
        return best["x"].clamp(0, 1)
    return x.detach().clamp(0, 1)


def gatys_transfer(
    content: torch.Tensor,
    styles: torch.Tensor | Sequence[torch.Tensor],
    features: nn.Module,
    cfg: GatysConfig | None = None,
    *,
    mask: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> GatysResult:
    """Stylise ``content`` with one or more ``styles`` by optimising the output image.

    Args:
        content: (3, H, W) RGB in [0, 1], any size (resized so the longer side is ``cfg.size``).
        styles: one (3, h, w) image or a list of them (blended by ``cfg.style_blend``); any sizes.
        features: a feature network mapping (B, 3, H, W) in [0, 1] to {layer: activation}, e.g.
            :func:`atelier.models.vgg_weights.load_vgg`; it must provide every configured layer.
        mask: optional (H, W) or (1, H, W) map in [0, 1]: where style applies (1) and where the
            content is kept (0); resized to the output.
        device: where to optimise.
    """
    cfg = cfg or GatysConfig()
    device = torch.device(device)
    style_list = [styles] if isinstance(styles, torch.Tensor) else list(styles)
    if not style_list:
        raise ValueError("give at least one style image")
    content = _as_batch(content, "content")
    style_list = [_as_batch(s, f"style image {i + 1}") for i, s in enumerate(style_list)]
    if cfg.style_blend is not None and len(cfg.style_blend) != len(style_list):
        raise ValueError(f"{len(style_list)} style images but {len(cfg.style_blend)} style_blend weights")
    if cfg.preserve_colors == "histogram":
        style_list = [match_color_histogram(s[0], content[0])[None] for s in style_list]
    features = features.to(device).eval().requires_grad_(False)
    autocast = partial(device_autocast, cfg.precision, device)
    generator = torch.Generator().manual_seed(cfg.seed)

    final = resize_longer(content, cfg.size)
    out_hw = tuple(final.shape[-2:])
    full_mask = None
    if mask is not None:
        m = mask.float().reshape(1, 1, *mask.shape[-2:])
        if m.min() < 0 or m.max() > 1:
            raise ValueError("the mask must have values in [0, 1]")
        full_mask = F.interpolate(m, size=out_hw, mode="bilinear", align_corners=False).clamp(0, 1)

    sizes = cfg.scale_sizes()
    steps_per = [cfg.coarse_steps] * (len(sizes) - 1) + [cfg.steps]
    history: list[dict[str, float]] = []
    frames: list[torch.Tensor] = []
    x: torch.Tensor | None = None
    start = time.perf_counter()
    with tqdm(total=sum(steps_per), desc="stylize", unit="it", disable=not progress, leave=False) as bar:
        for level, (size, steps) in enumerate(zip(sizes, steps_per)):
            c = resize_longer(content, size).to(device)
            hw = tuple(c.shape[-2:])
            s_size = max(16, round(size * cfg.style_scale))
            ss = [resize_longer(s, s_size).to(device) for s in style_list]
            if cfg.preserve_colors == "luminance":
                c_y = luminance(c)
                ss = [match_luminance(luminance(s), c_y) for s in ss]
                c = c_y
            level_mask = None if full_mask is None else F.interpolate(full_mask, size=hw, mode="bilinear", align_corners=False).to(device)
            objective = StyleLoss(features, c, ss, cfg, mask=level_mask, autocast=autocast)
            if x is None:
                if cfg.init == "content":
                    x = c.clone()
                else:
                    x = torch.rand(c.shape, generator=generator).to(device)
            else:
                x = F.interpolate(x, size=hw, mode="bicubic", align_corners=False).clamp(0, 1)
            x = _optimise(x, objective, cfg, steps, size, is_final=level == len(sizes) - 1, history=history,
                          frames=frames, out_hw=out_hw, bar=bar)
    out = x.cpu()
    if out.shape[-2:] != final.shape[-2:]:  # steps=0 with a single scale can leave x at the content size
        out = F.interpolate(out, size=out_hw, mode="bicubic", align_corners=False).clamp(0, 1)
    if cfg.preserve_colors == "luminance":
        out = combine_luminance(out, final)
    if full_mask is not None:
        out = full_mask * out + (1 - full_mask) * final
    frames_t = torch.stack(frames).cpu() if frames else None
    if frames_t is not None and cfg.preserve_colors == "luminance":
        frames_t = combine_luminance(frames_t, final.expand(len(frames_t), -1, -1, -1))
    return GatysResult(
        image=out[0].clamp(0, 1),
        history=history,
        frames=frames_t,
        seconds=time.perf_counter() - start,
        feature_network=getattr(features, "description", type(features).__name__),
        config=cfg,
    )


def iterations_per_full_pass(cfg: GatysConfig) -> float:
    """Cost of a run in units of one iteration at the output size (a level of half the size costs 1/4)."""
    sizes = cfg.scale_sizes()
    steps = [cfg.coarse_steps] * (len(sizes) - 1) + [cfg.steps]
    return sum(n * (s / cfg.size) ** 2 for s, n in zip(sizes, steps))


__all__ = [
    "GatysConfig",
    "GatysResult",
    "StyleLoss",
    "gatys_transfer",
    "iterations_per_full_pass",
    "resize_longer",
]
