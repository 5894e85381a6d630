"""Adaptive discriminator augmentation (ADA, Karras et al. 2020): augment with a strength p that
follows how much the discriminator overfits.

Two parts:

- :class:`ADAPipe`: every op is applied to each image independently with probability ``p``, so at
  p < 1 the generator can still infer the clean distribution ("non-leaking" augmentation). The ops
  are a subset of the paper's "bgc" pipeline: geometric ``xflip``, ``rotate90``, ``xint`` (integer
  translation), ``scale`` (isotropic), ``rotate``, ``aniso`` (anisotropic scaling), ``xfrac``
  (fractional translation), composed into one affine map per image and applied with one bilinear
  ``grid_sample`` (reflection padding); colour ``brightness``, ``contrast``, ``saturation``. Flips and
  90-degree rotations are off by default: they change a digit's identity. All of it is differentiable
  in the images. Strengths follow the paper (translation 1/8 of the size, scale and aniso log2-std 0.2,
  full-circle rotation, brightness std 0.2, contrast log2-std 0.5, saturation log2-std 1).
- :class:`ADAController`: the overfitting heuristic r_t = E[sign(D(real))] over the last ``interval``
  steps; p moves by ``sign(r_t - target) * images / (kimg * 1000)`` after each interval, so it can
  sweep from 0 to 1 in ``kimg`` thousand real images, and is clamped to [0, ``max_p``].

Not taken from the paper: its anti-aliased (wavelet-filtered, 2x upsampled) geometric warps, luma flip
and hue rotation. The colour ops are not clamped (as in the paper): values may leave [-1, 1].
Random parameters come from the given ``torch.Generator`` on the CPU, as in :mod:`.diffaugment`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from atelier.augment.diffaugment import parse_policy

GEOMETRIC_OPS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR_OPS = ("brightness", "contrast", "saturation")
ADA_OPS = GEOMETRIC_OPS + COLOR_OPS
#: The default pipeline: the paper's "bgc" without flips and 90-degree turns (digits), luma flip and hue.
DEFAULT_ADA_POLICY = "xint,scale,rotate,aniso,xfrac,brightness,contrast,saturation"

Params = dict[str, torch.Tensor]


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    """(B,) radians -> (B, 3, 3) rotation matrices."""
    c, s = angle.cos(), angle.sin()
    m = torch.eye(3).repeat(angle.shape[0], 1, 1)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _scaling(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3).repeat(sx.shape[0], 1, 1)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _translation(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3).repeat(tx.shape[0], 1, 1)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


@dataclass
class ADAPipe:
    """``pipe(images, p, generator=g)``: each op applied to each image with probability ``p``."""

    policy: str = DEFAULT_ADA_POLICY
    translate_max: float = 0.125  # xint: a fraction of the image size
    translate_std: float = 0.125  # xfrac: likewise
    scale_std: float = 0.2  # log2 std of scale and aniso
    rotate_max: float = 1.0  # rotate: a fraction of a half turn either way
    brightness_std: float = 0.2
    contrast_std: float = 0.5  # log2
    saturation_std: float = 1.0  # log2

    def __post_init__(self) -> None:
        self.ops = parse_policy(self.policy, ADA_OPS)

    # -- parameters ---------------------------------------------------------------------------
    def sample(self, shape: torch.Size | tuple[int, ...], p: float,
               generator: torch.Generator | None = None) -> Params:
        """``matrix`` (B, 3, 3): output pixel -> input pixel (pixel units, centred), ``warp`` (B,) bool:
        rows whose matrix is not the identity; ``brightness``, ``contrast``, ``saturation`` (B,)."""
        with torch.autocast("cpu", enabled=False):  # called inside a training step's autocast: keep fp32
            return self._sample(shape, p, generator)

    def _sample(self, shape, p: float, generator: torch.Generator | None) -> Params:
        b, _, h, w = shape
        g = generator

        def gate() -> torch.Tensor:  # (B,) True with probability p
            return torch.rand(b, generator=g) < p

        def gated(values: torch.Tensor, neutral: float, chance: torch.Tensor | None = None) -> torch.Tensor:
            return torch.where(gate() if chance is None else chance, values, torch.full_like(values, neutral))

        m, warp = torch.eye(3).repeat(b, 1, 1), torch.zeros(b, dtype=torch.bool)

        def then(op_matrix: torch.Tensor, on: torch.Tensor) -> None:
            nonlocal m, warp
            m = m @ op_matrix
            warp = warp | on

        # Each op's values are drawn whether or not it fires, so the stream of draws does not depend on p.
        if "xflip" in self.ops:
            on = gate() & (torch.rand(b, generator=g) < 0.5)
            then(_scaling(1.0 - 2.0 * on.float(), torch.ones(b)), on)
        if "rotate90" in self.ops:
            quarter = torch.randint(0, 4, (b,), generator=g)
            on = gate() & (quarter > 0)
            then(_rotation(torch.where(on, quarter, 0).float() * (math.pi / 2)), on)
        if "xint" in self.ops:
            t = (torch.rand(b, 2, generator=g) * 2 - 1) * self.translate_max
            t = (t * torch.tensor([w, h])).round()
            on = gate() & (t != 0).any(dim=1)
            t = torch.where(on[:, None], t, 0.0)
            then(_translation(t[:, 0], t[:, 1]), on)
        if "scale" in self.ops:
            on = gate()
            s = gated(torch.exp2(torch.randn(b, generator=g) * self.scale_std), 1.0, on)
            then(_scaling(s, s), on)
        # The paper rotates before and after the anisotropic scaling (so that it acts along a random
        # axis), each with 1 - sqrt(1 - p), so that some rotation happens with probability p.
        p_rot = 1.0 - math.sqrt(max(0.0, 1.0 - p))

        def rotate() -> None:
            on = torch.rand(b, generator=g) < p_rot
            angle = (torch.rand(b, generator=g) * 2 - 1) * math.pi * self.rotate_max
            then(_rotation(torch.where(on, angle, 0.0)), on)

        if "rotate" in self.ops:
            rotate()
        if "aniso" in self.ops:
            on = gate()
            s = gated(torch.exp2(torch.randn(b, generator=g) * self.scale_std), 1.0, on)
            then(_scaling(s, 1.0 / s), on)
        if "rotate" in self.ops:
            rotate()
        if "xfrac" in self.ops:
            on = gate()
            t = torch.randn(b, 2, generator=g) * self.translate_std * torch.tensor([w, h])
            t = torch.where(on[:, None], t, 0.0)
            then(_translation(t[:, 0], t[:, 1]), on)

        params: Params = {"matrix": m, "warp": warp}
        if "brightness" in self.ops:
            params["brightness"] = gated(torch.randn(b, generator=g) * self.brightness_std, 0.0)
        if "contrast" in self.ops:
            params["contrast"] = gated(torch.exp2(torch.randn(b, generator=g) * self.contrast_std), 1.0)
        if "saturation" in self.ops:
            params["saturation"] = gated(torch.exp2(torch.randn(b, generator=g) * self.saturation_std), 1.0)
        return params

    # -- application --------------------------------------------------------------------------
    def apply(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """``x`` (B, C, H, W) transformed by ``params``; differentiable in ``x``. Rows that drew no
        op come back bit for bit."""
        rows = params["warp"].nonzero().flatten()
        if rows.numel():
            warped = _warp(x[rows.to(x.device)], params["matrix"][rows])
            x = x.index_copy(0, rows.to(x.device), warped)

        def per_image(name: str) -> torch.Tensor:
            return params[name].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)

        # Neutral values leave a pixel exactly as it was: x + 0, x * 1, x + (x - mean) * 0.
        if "brightness" in params:
            x = x + per_image("brightness")
        if "contrast" in params:
            x = x * per_image("contrast")  # about 0, the middle of [-1, 1], as in the paper
        if "saturation" in params and x.shape[1] > 1:  # grey images have no saturation
            x = x + (x - x.mean(dim=1, keepdim=True)) * (per_image("saturation") - 1)
        return x

    def __call__(self, x: torch.Tensor, p: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"ADA takes a batch (B, C, H, W), got shape {tuple(x.shape)}")
        if p <= 0 or not self.ops:
            return x
        return self.apply(x, self.sample(x.shape, p, generator))


def _warp(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` (N, C, H, W) through ``matrix`` (N, 3, 3), which maps output pixel positions
    (centred on the image, in pixels) to input ones. Bilinear, reflection-padded, in float32."""
    n, c, h, w = x.shape
    # grid_sample works in [-1, 1] coordinates (align_corners=False: the image's outer edges):
    # pixels = S @ normalised, with S = diag(W/2, H/2), so theta = S^-1 @ matrix @ S.
    s = torch.diag(torch.tensor([w / 2.0, h / 2.0, 1.0]))
    s_inv = torch.diag(torch.tensor([2.0 / w, 2.0 / h, 1.0]))
    with torch.autocast(x.device.type, enabled=False):  # the sampling grid needs full precision
        theta = (s_inv @ matrix @ s)[:, :2, :].to(x.device)
        grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.to(x.dtype)


class ADAController:
    """Adjusts ADA's p from the discriminator's outputs on real images.

    Call :meth:`update` with the logits of each (augmented) real batch. Every ``interval`` calls,
    r_t = E[sign(D(real))] over them is compared with ``target``: above it the discriminator is too
    sure of the training images (overfitting) and p rises; below it p falls; by
    ``images / (kimg * 1000)`` either way. The logits may be raw non-saturating or hinge outputs: in
    both, positive means "real". ``reduce`` (e.g. an all-reduce sum) combines the accumulated
    (sum of signs, count) across processes so every rank moves p alike.
    """

    def __init__(self, *, target: float = 0.6, interval: int = 4, kimg: float = 100.0, p: float = 0.0,
                 max_p: float = 0.99, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        if not -1.0 < target < 1.0:
            raise ValueError(f"ADA target must lie in (-1, 1), got {target}")
        if interval < 1:
            raise ValueError(f"ADA interval must be at least 1 step, got {interval}")
        if kimg <= 0:
            raise ValueError(f"ADA kimg must be positive, got {kimg}")
        if not 0.0 < max_p < 1.0:
            raise ValueError(f"ADA max_p must lie in (0, 1), got {max_p}")
        self.target, self.interval, self.kimg, self.max_p, self.reduce = target, interval, kimg, max_p, reduce
        self.p = min(max(float(p), 0.0), max_p)
        self.rt: float | None = None  # the last completed estimate
        self._sum: torch.Tensor | float = 0.0  # sum of sign(D(real)) since the last adjustment
        self._count = 0  # real images since the last adjustment
        self._calls = 0

    def update(self, real_logits: torch.Tensor) -> bool:
        """Accumulate one batch of real logits; adjust p at the end of an interval (then True).
        Only then is a value read back from the device."""
        real_logits = real_logits.detach().float().flatten()
        self._sum = real_logits.sign().sum() + self._sum
        self._count += real_logits.numel()
        self._calls += 1
        if self._calls < self.interval:
            return False
        total = torch.stack([torch.as_tensor(self._sum, dtype=torch.float32),
                             torch.tensor(float(self._count), device=real_logits.device)])
        if self.reduce is not None:
            total = self.reduce(total)
        signs, images = (float(v) for v in total.cpu())
        self.adjust(signs / max(images, 1.0), images)
        return True

    def adjust(self, rt: float, images: float) -> float:
        """Move p given the estimate ``rt`` over ``images`` real images; start a new interval."""
        self.rt = float(rt)
        step = images / (self.kimg * 1000.0)
        direction = (rt > self.target) - (rt < self.target)  # sign(rt - target)
        self.p = min(max(self.p + direction * step, 0.0), self.max_p)
        self._sum, self._count, self._calls = 0.0, 0, 0
        return self.p

    def state_dict(self) -> dict:
        """Plain numbers (JSON-safe): p, the last r_t and the part-filled interval."""
        return {"p": self.p, "rt": self.rt, "sign_sum": float(self._sum), "count": self._count,
                "calls": self._calls}

    def load_state_dict(self, state: dict) -> None:
        self.p = float(state["p"])
        self.rt = None if state.get("rt") is None else float(state["rt"])
        self._sum, self._count, self._calls = float(state["sign_sum"]), int(state["count"]), int(state["calls"])
