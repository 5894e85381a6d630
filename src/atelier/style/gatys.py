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
from typing import Annotated, Literal

import annotated_types as at
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from atelier.config import Config, NonNegative, Positive, Seed
from atelier.device import autocast as device_autocast, check_device
from atelier.signals import ShouldStop
from atelier.objectives.style import blend_grams, content_loss, gram_matrix, style_loss, total_variation
from atelier.style.color import (
    combine_luminance,
    luminance,
    match_color_histogram,
    match_luminance,
)

Steps = Annotated[int, at.Interval(ge=0, le=100_000)]  # iterations of one level
#: Gatys et al.'s layers: content from conv4_2 (taken after its ReLU), style from the first ReLU of
#: each block, equally weighted.
DEFAULT_CONTENT_LAYERS = {"relu4_2": 1.0}
DEFAULT_STYLE_LAYERS = {"relu1_1": 1.0, "relu2_1": 1.0, "relu3_1": 1.0, "relu4_1": 1.0, "relu5_1": 1.0}
#: Below this size (longer side) a coarser scale carries too little of the image to be worth running.
MIN_SCALE_SIZE = 64


@dataclass
class GatysConfig(Config):
    """Every knob of one optimisation-based transfer (saved beside outputs so a result is reproducible).

    Sizes are the longer side in pixels; the content's aspect ratio is kept.
    """

    size: Annotated[int, at.Interval(ge=16, le=8192)] = 512
    steps: Steps = 100  # iterations at the output size
    scales: Annotated[int, at.Interval(ge=1, le=10)] = 3  # coarse-to-fine levels, each half the size of the next (1: single scale)
    coarse_steps: Steps = 150  # iterations at each coarser level
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"  # lbfgs | adam
    lr: Positive | None = None  # default: 1.0 for L-BFGS, 0.02 for Adam (pixels in [0, 1])
    init: Literal["content", "noise"] = "content"  # content | noise
    content_weight: NonNegative = 1.0
    style_weight: NonNegative = 10.0
    tv_weight: NonNegative = 1e-3
    content_layers: dict[str, NonNegative] = field(default_factory=lambda: dict(DEFAULT_CONTENT_LAYERS))
    style_layers: dict[str, NonNegative] = field(default_factory=lambda: dict(DEFAULT_STYLE_LAYERS))
    style_scale: Annotated[float, at.Interval(gt=0.0, le=8.0)] = 1.0  # the style image's longer side, relative to the output's
    style_blend: list[NonNegative] | None = None  # weights of several style images (default: equal)
    preserve_colors: Literal["none", "luminance", "histogram"] = "none"  # none | luminance | histogram
    arch: Literal["vgg16", "vgg19"] = "vgg19"
    pool: Literal["avg", "max"] = "avg"  # avg (Gatys et al.'s choice for synthesis) | max
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto | fp32 | bf16 for the feature network
    seed: Seed = 0
    frame_every: Annotated[int, at.Interval(ge=0, le=10**6)] = 0  # keep an intermediate image every K iterations (0: none) for a GIF
    target_loss: NonNegative | None = None  # stop at the output size once the loss is this low (benchmarks)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.content_layers and not self.style_layers:
            raise ValueError("give at least one content or style layer")

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
    stopped: bool = False  # ``should_stop`` ended the optimisation early; ``image`` is the best one so far


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
              is_final: bool, history: list, frames: list, out_hw: tuple[int, int], bar,
              should_stop: ShouldStop | None = None,
              on_frame: Callable[[torch.Tensor], None] | None = None) -> tuple[torch.Tensor, bool]:
    """Run ``steps`` iterations of the configured optimiser on the pixels ``x`` (1, 3, h, w); returns the
    image and whether ``should_stop`` ended the loop early (it is asked before each iteration)."""
    # contiguous: L-BFGS flattens the gradient with .view(), which a permuted image (an upload decoded
    # as HWC, used at its own size) would refuse
    x = x.detach().clone(memory_format=torch.contiguous_format).requires_grad_(True)
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

    stopped = False
    for i in range(steps):
        if should_stop is not None and should_stop():
            stopped = True
            break
        opt.step(closure)
        record = {"size": size, "step": i + 1, **{k: float(v) for k, v in last.items()}}
        history.append(record)
        bar.update(1)
        bar.set_postfix(size=size, loss=f"{record['loss']:.4g}")
        if cfg.frame_every and len(history) % cfg.frame_every == 0:
            frames.append(F.interpolate(x.detach().clamp(0, 1), size=out_hw, mode="bilinear", align_corners=False)[0])
            if on_frame is not None:
                on_frame(frames[-1])
        if is_final and cfg.target_loss is not None and record["loss"] <= cfg.target_loss:
            break
    if steps and cfg.optimizer == "lbfgs":
        return best["x"].clamp(0, 1), stopped
    return x.detach().clamp(0, 1), stopped


def gatys_transfer(
    content: torch.Tensor,
    styles: torch.Tensor | Sequence[torch.Tensor],
    features: nn.Module,
    cfg: GatysConfig | None = None,
    *,
    mask: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    should_stop: ShouldStop | None = None,
    on_frame: Callable[[torch.Tensor], None] | None = None,
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
        on_frame: called with each intermediate frame (3, H, W) in [0, 1] as it is recorded (every
            ``cfg.frame_every`` iterations), e.g. to show previews while the optimisation runs.
        should_stop: asked before every iteration; when it returns True the optimisation ends there
            and the result (``stopped=True``) holds the best image so far, at the output size.
    """
    cfg = cfg or GatysConfig()
    device = check_device(device)
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
    stopped = False
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
            x, stopped = _optimise(x, objective, cfg, steps, size, is_final=level == len(sizes) - 1,
                                   history=history, frames=frames, out_hw=out_hw, bar=bar, should_stop=should_stop,
                                   on_frame=on_frame)
            if stopped:  # the coarser result so far is brought to the output size below
                break
    out = x.cpu()
    if out.shape[-2:] != final.shape[-2:]:  # steps=0 with a single scale (or a stop) leaves x at another size
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
        stopped=stopped,
    )


def iterations_planned(cfg: GatysConfig) -> int:
    """Iterations a run makes over all its levels (fewer if ``target_loss`` or a stop ends it early)."""
    return cfg.coarse_steps * (len(cfg.scale_sizes()) - 1) + cfg.steps


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
    "iterations_planned",
    "resize_longer",
]
