"""Flow-matching generative models (rectified flow): a U-Net that predicts the velocity from noise to
data, EMA weights for sampling, classifier-free guidance, and the creative operations a flow allows:
sampling with a chosen solver and step budget, interpolation through the noise, editing a given image
(noise it to time t, solve back) and inpainting inside a mask. ``objective="ddpm"`` makes the same
network the DDPM peer (epsilon prediction on a 1,000-step linear schedule, sampled with DDIM).

The maths lives in :mod:`atelier.schedulers` (the path, the time grids and the solvers); the network
in :mod:`atelier.models.unet`. Images are (B, C, R, R) in [-1, 1] throughout.
"""

from __future__ import annotations

import copy
import math
import typing
from dataclasses import dataclass
from typing import Annotated, Literal

import annotated_types as at
import torch
from torch import nn

from atelier.config import Config, Probability, Width
from atelier.device import autocast
from atelier.models.latents import label_weights, normal_latents
from atelier.models.pretrained import PretrainedMixin
from atelier.models.registry import register_model
from atelier.models.unet import UNet
from atelier.schedulers import SAMPLERS, DDPMSchedule, ddim_sample, flow_interpolant, solve, time_grid

Sampler = Literal["euler", "heun", "dpm++2m", "ab2"]
SamplePrecision = Literal["auto", "fp32", "bf16"]


@dataclass
class FlowConfig(Config):
    resolution: Annotated[int, at.Interval(ge=4, le=4096)] = 28
    channels: Literal[1, 3] = 1
    width: Width = 16  # channels of the U-Net's first level (DDPM's CIFAR-10 U-Net: 128). 16 is the measured
    # best for 10 CPU minutes on MNIST (FID 3.2 against 5.3 for 24: BENCHMARKS.md); give more for longer runs
    levels: Annotated[int, at.Interval(ge=1, le=8)] = 3  # resolutions the U-Net works at (each halves the
    # last; the image side must divide by 2^(levels - 1): 28 -> 14 -> 7 with 3)
    max_mult: Annotated[int, at.Interval(ge=1, le=64)] = 2  # channels double per level up to width * max_mult
    blocks_per_level: Annotated[int, at.Interval(ge=1, le=8)] = 2  # residual blocks per level (DDPM: 2)
    attention: bool = True  # self-attention at the lowest resolution
    dropout: Probability = 0.0  # inside the residual blocks (DDPM on CIFAR-10: 0.1)
    num_classes: Annotated[int, at.Interval(ge=0, le=10**6)] = 0  # 0: unconditional
    objective: Literal["flow", "ddpm"] = "flow"  # flow: rectified flow, velocity prediction | ddpm: the DDPM
    # peer (epsilon prediction, 1,000-step linear schedule, DDIM sampling)
    sampler: Sampler = "ab2"  # default solver: euler | heun | dpm++2m | ab2 (flow models). Measured on MNIST
    # (BENCHMARKS.md): AB2 beats DPM-Solver++(2M) at 4, 8 and 16 steps (FID 4.04/2.85/2.52 against
    # 5.13/3.05/2.59), Euler and Heun at equal evaluations
    sample_steps: Annotated[int, at.Interval(ge=1, le=1000)] = 8  # default solver steps (ddpm: DDIM steps);
    # 8 is within 13% of the best FID unconditional and the best conditional, at half the cost of 16
    guidance: Annotated[float, at.Interval(ge=0.0, le=100.0)] = 1.0  # default classifier-free guidance w:
    # v = v_uncond + w (v_cond - v_uncond); 0 unconditional, 1 conditional, above 1 stronger
    time_shift: Annotated[float, at.Interval(gt=0.0, le=100.0)] = 1.0  # sampling time grid warp (above 1: more
    # steps near the noise)
    sample_precision: SamplePrecision = "auto"  # the network's arithmetic when sampling (the
    # solver always runs in fp32); auto: bf16 on CUDA and on CPUs with native bf16 (measured: the same FID,
    # twice the images/s on 2 Zen 4 cores)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.resolution % 2 ** (self.levels - 1):
            raise ValueError(f"a U-Net of {self.levels} levels needs an image side that divides by "
                             f"{2 ** (self.levels - 1)}, got {self.resolution}: use fewer levels")

    def mults(self) -> tuple[int, ...]:
        return tuple(min(2**i, self.max_mult) for i in range(self.levels))


def nfe(sampler: str, steps: int, *, guided: bool = False, objective: str = "flow") -> int:
    """Network evaluations per sample: steps (euler, dpm++2m, ab2, ddim) or 2 per step (heun), twice that
    with guidance (a conditional and an unconditional pass each time)."""
    per = 2 * steps if objective == "flow" and sampler == "heun" else steps
    return 2 * per if guided else per


class FlowModel(PretrainedMixin, nn.Module):
    """The network, its EMA copy (what samples) and the sampling / editing operations.

    ``last_nfe`` holds the network evaluations per sample of the latest sampling call."""

    family = "flow"
    tasks = ("sample", "interpolate", "edit", "inpaint")
    sampling_options = ("steps", "sampler", "guidance", "precision")  # what sample() takes beyond the other families' arguments
    config_class = FlowConfig

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        self.config = config
        self.net = UNet(channels=config.channels, width=config.width, mults=config.mults(),
                        blocks_per_level=config.blocks_per_level, attention=config.attention,
                        dropout=config.dropout, num_classes=config.num_classes)
        self.net_ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.schedule = DDPMSchedule() if config.objective == "ddpm" else None
        self.last_nfe = 0

    @property
    def conditional(self) -> bool:
        return self.config.num_classes > 0

    # -- the prediction ---------------------------------------------------------------------------
    def predict(self, x: torch.Tensor, t: float | torch.Tensor, labels: torch.Tensor | None = None, *,
                guidance: float = 1.0, use_ema: bool = True, precision: str | None = None) -> torch.Tensor:
        """The network's output (velocity, or epsilon for ddpm) at time ``t``, guided: with labels (indices
        or class weights) and ``guidance`` w, v_uncond + w (v_cond - v_uncond); one pass when w is 0 or 1.
        ``precision`` ("auto", "fp32", "bf16") overrides the config's ``sample_precision`` for this call."""
        net = self.net_ema if use_ema else self.net
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(x.shape[0])
        with autocast(self._precision(precision), x.device):
            if not self.conditional or labels is None or guidance == 0.0:
                return net(x, t, None).float()
            if guidance == 1.0:
                return net(x, t, labels).float()
            null = torch.full((x.shape[0],), self.config.num_classes, dtype=torch.long, device=x.device)
            both = net(torch.cat([x, x]), torch.cat([t, t]),
                       _stack_labels(labels, null, self.config.num_classes)).float()
        cond, uncond = both.chunk(2)  # the labelled half first (see _stack_labels)
        return uncond + guidance * (cond - uncond)

    # -- sampling -----------------------------------------------------------------------------------
    def sample_latents(self, n: int, *, generator: torch.Generator | None = None,
                       truncation: float | None = None) -> torch.Tensor:
        """The starting noise of ``n`` samples, flattened (n, C R R), on CPU; ``truncation`` draws it from
        the normal truncated to +-T (the GANs' truncation trick, here a lower "temperature")."""
        c, r = self.config.channels, self.config.resolution
        return normal_latents(n, c * r * r, generator=generator, truncation=truncation)

    def default_labels(self, n: int) -> torch.Tensor | None:
        return torch.arange(n) % self.config.num_classes if self.conditional else None

    def _labels(self, labels, n: int) -> torch.Tensor | None:
        if not self.conditional:
            if labels is not None:
                raise ValueError("this flow model is not class-conditional: it takes no labels")
            return None
        if labels is None:
            return self.default_labels(n)
        if isinstance(labels, int):
            labels = torch.full((n,), labels, dtype=torch.long)
        labels = torch.as_tensor(labels)
        if labels.dim() == 1:
            labels = labels.long()
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.config.num_classes):
                raise ValueError(f"labels must lie in 0..{self.config.num_classes - 1}, got "
                                 f"{int(labels.min())}..{int(labels.max())}")
        else:
            labels = label_weights(labels, self.config.num_classes)
        if labels.shape[0] != n:
            raise ValueError(f"got {labels.shape[0]} labels for {n} images")
        return labels

    def _precision(self, precision: str | None) -> str:
        if precision is None:
            return self.config.sample_precision
        choices = typing.get_args(SamplePrecision)
        if precision not in choices:
            raise ValueError(f"precision must be one of {', '.join(choices)}, got {precision!r}")
        return precision

    def _settings(self, steps, sampler, guidance) -> tuple[int, str, float]:
        cfg = self.config
        steps = cfg.sample_steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
            raise ValueError(f"steps must be an integer in 1..1000, got {steps!r}")
        if cfg.objective == "ddpm":
            if sampler not in (None, "ddim"):
                raise ValueError(f"a ddpm model samples with DDIM; sampler {sampler!r} does not apply to it")
            sampler = "ddim"
        else:
            sampler = cfg.sampler if sampler is None else sampler
            if sampler not in SAMPLERS:
                raise ValueError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
        if guidance is not None and not self.conditional:
            raise ValueError("guidance steers a class-conditional model towards its label; this flow model is "
                             "unconditional")
        guidance = cfg.guidance if guidance is None else guidance
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not (
                math.isfinite(guidance) and 0.0 <= guidance <= 100.0):
            raise ValueError(f"guidance must be a number in 0..100, got {guidance!r}")
        return steps, sampler, float(guidance)

    def planned_nfe(self, steps: int | None = None, sampler: str | None = None, guidance: float | None = None) -> int:
        """Network evaluations per sample that :meth:`sample` with these settings takes (labels given)."""
        steps, sampler, guidance = self._settings(steps, sampler, guidance)
        return nfe(sampler, steps, guided=self.conditional and guidance not in (0.0, 1.0), objective=self.config.objective)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None, *, steps: int | None = None,
                 sampler: str | None = None, guidance: float | None = None, use_ema: bool = True,
                 batch_size: int = 256, should_stop=None, precision: str | None = None,
                 clamp: bool = True) -> torch.Tensor:
        """Solve from the noise ``z`` ((N, C R R) or (N, C, R, R)) at t = 1 to images (N, C, R, R) in [-1, 1].
        ``labels``: indices (N,) or class weights (N, K) for a conditional model (None: every class in turn).
        ``precision`` overrides the config's ``sample_precision``; ``clamp=False`` returns the solver's end
        points as they are (reflow learns the teacher's flow, not a clipped one)."""
        steps, sampler, guidance = self._settings(steps, sampler, guidance)
        precision = self._precision(precision)
        cfg = self.config
        z = z.reshape(-1, cfg.channels, cfg.resolution, cfg.resolution)
        labels = self._labels(labels, z.shape[0])
        device = next(self.net_ema.parameters()).device
        guided = self.conditional and labels is not None and guidance not in (0.0, 1.0)
        out = []
        for i in range(0, z.shape[0], batch_size):
            x = z[i : i + batch_size].to(device)
            lab = labels[i : i + batch_size].to(device) if labels is not None else None

            def fn(x_t: torch.Tensor, t: float) -> torch.Tensor:
                return self.predict(x_t, t, lab, guidance=guidance, use_ema=use_ema, precision=precision)

            if self.schedule is not None:
                solution = ddim_sample(fn, x, self.schedule, steps, should_stop=should_stop)
            else:
                solution = solve(fn, x, time_grid(steps, shift=cfg.time_shift), sampler, should_stop=should_stop)
            end = solution.x.float()
            out.append((end.clamp(-1.0, 1.0) if clamp else end).cpu())
        self.last_nfe = nfe(sampler, steps, guided=guided, objective=cfg.objective)
        c, r = cfg.channels, cfg.resolution
        return torch.cat(out) if out else torch.empty(0, c, r, r)

    def sample(self, n: int, *, labels: torch.Tensor | int | None = None, generator: torch.Generator | None = None,
               truncation: float | None = None, steps: int | None = None, sampler: str | None = None,
               guidance: float | None = None, use_ema: bool = True, precision: str | None = None) -> torch.Tensor:
        """``n`` new images (n, C, R, R) in [-1, 1]; ``labels`` a class, n classes or None (every class
        in turn); ``steps``/``sampler``/``guidance``/``precision`` default to the config's."""
        z = self.sample_latents(n, generator=generator, truncation=truncation)
        return self.generate(z, self._labels(labels, n), steps=steps, sampler=sampler, guidance=guidance,
                             use_ema=use_ema, precision=precision)

    # -- images in ----------------------------------------------------------------------------------
    def _require_flow(self, what: str) -> None:
        if self.schedule is not None:
            raise ValueError(f"{what} needs a flow model; this one is the ddpm peer (objective='ddpm')")

    @torch.no_grad()
    def edit(self, images: torch.Tensor, strength: float, labels: torch.Tensor | int | None = None, *,
             steps: int | None = None, sampler: str | None = None, guidance: float | None = None,
             generator: torch.Generator | None = None, use_ema: bool = True) -> torch.Tensor:
        """SDEdit for flows: noise ``images`` ([-1, 1], (N, C, R, R)) to time ``strength`` in [0, 1], then
        solve back to t = 0 in ``steps`` steps (those of the path it covers). 0 returns the images; 1
        ignores them. A rough sketch becomes a plausible image, keeping its layout at moderate strength."""
        self._require_flow("editing")
        if not (isinstance(strength, (int, float)) and 0.0 <= strength <= 1.0):
            raise ValueError(f"strength must be a number in [0, 1], got {strength!r}")
        steps, sampler, guidance = self._settings(steps, sampler, guidance)
        images = images.float()
        n = images.shape[0]
        labels = self._labels(labels, n) if labels is not None else None  # none: the unconditional model
        if strength == 0.0:
            self.last_nfe = 0
            return images.clone()
        noise = torch.randn(images.shape, generator=generator)
        x = flow_interpolant(images, noise, torch.full((n,), float(strength)))
        device = next(self.net_ema.parameters()).device
        lab = labels.to(device) if labels is not None else None
        grid = time_grid(steps, start=float(strength), shift=self.config.time_shift)
        out = solve(lambda x_t, t: self.predict(x_t, t, lab, guidance=guidance, use_ema=use_ema), x.to(device),
                    grid, sampler)
        self.last_nfe = nfe(sampler, steps, guided=lab is not None and guidance not in (0.0, 1.0))
        return out.x.float().clamp(-1.0, 1.0).cpu()

    @torch.no_grad()
    def inpaint(self, images: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | int | None = None, *,
                steps: int | None = None, sampler: str | None = None, guidance: float | None = None,
                generator: torch.Generator | None = None, use_ema: bool = True) -> torch.Tensor:
        """Fill the region where ``mask`` is 1 ((N or 1, 1 or C, R, R), values in [0, 1]) from noise, keeping
        the rest: after every step the known pixels are replaced by the images noised to the current time
        along the same noise (the "replacement" method), so at t = 0 they are exactly the input's."""
        self._require_flow("inpainting")
        steps, sampler, guidance = self._settings(steps, sampler, guidance)
        images = images.float()
        n = images.shape[0]
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.dim() != 4 or mask.shape[-2:] != images.shape[-2:] or mask.shape[0] not in (1, n) \
                or mask.shape[1] not in (1, images.shape[1]):
            raise ValueError(f"the mask must be (N or 1, 1 or C, H, W) matching images {tuple(images.shape)}, "
                             f"got {tuple(mask.shape)}")
        if not bool(((mask >= 0) & (mask <= 1)).all()):
            raise ValueError("mask values must lie in [0, 1] (1: fill in, 0: keep)")
        labels = self._labels(labels, n) if labels is not None else None  # none: the unconditional model
        device = next(self.net_ema.parameters()).device
        noise = torch.randn(images.shape, generator=generator).to(device)
        images, mask = images.to(device), mask.to(device)
        lab = labels.to(device) if labels is not None else None

        def keep_known(x: torch.Tensor, t: float) -> torch.Tensor:
            known = images + t * (noise - images)
            return mask * x + (1.0 - mask) * known

        out = solve(lambda x_t, t: self.predict(x_t, t, lab, guidance=guidance, use_ema=use_ema), noise,
                    time_grid(steps, shift=self.config.time_shift), sampler, after_step=keep_known)
        self.last_nfe = nfe(sampler, steps, guided=lab is not None and guidance not in (0.0, 1.0))
        result = out.x.float().clamp(-1.0, 1.0)
        return (mask * result + (1.0 - mask) * images).cpu()


def _stack_labels(labels: torch.Tensor, null: torch.Tensor, k: int) -> torch.Tensor:
    """Conditional labels then "no label", as one batch: indices stay indices; class weights (B, K) get
    a "no label" column (B, K + 1) so both halves index the same table."""
    if labels.dim() == 1:
        return torch.cat([labels, null])
    weights = torch.cat([labels.float(), torch.zeros(labels.shape[0], 1, device=labels.device)], dim=1)
    return torch.cat([weights, torch.eye(k + 1, device=labels.device)[null]])


@register_model("flow")
def flow(**kwargs) -> FlowModel:
    """A rectified-flow model with a small U-Net (16 channels, 3 levels: 28 px grey by default); keyword
    arguments are the fields of :class:`FlowConfig`."""
    return FlowModel(FlowConfig(**kwargs))


@register_model("flow-cifar")
def flow_cifar(**kwargs) -> FlowModel:
    """Rectified flow for 32 px colour (CIFAR-10): 4 levels (32 -> 4), 16 channels doubling to 32.

    The width is chosen by measurement on 2 CPU cores (BENCHMARKS.md): in 10 minutes width 16 beat 32
    (FID 1.99 against 2.29; it takes 2.7x the steps), and in 60 minutes the conditional width-16 model
    beat both GANs trained the same hour; 64 trains at ~30 images/s there. With a GPU, pass a wider
    ``width`` (64 or more)."""
    settings = dict(resolution=32, channels=3, width=16, levels=4, max_mult=2)
    settings.update(kwargs)
    return FlowModel(FlowConfig(**settings))


@register_model("ddpm")
def ddpm(**kwargs) -> FlowModel:
    """The DDPM peer: the flow preset's U-Net trained to predict the noise on DDPM's linear 1,000-step
    schedule, sampled with 50 DDIM steps."""
    settings = dict(objective="ddpm", sample_steps=50)
    settings.update(kwargs)
    return FlowModel(FlowConfig(**settings))
