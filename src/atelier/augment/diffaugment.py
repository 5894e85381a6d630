"""DiffAugment (Zhao et al. 2020): cheap augmentations the generator can be trained through.

A discriminator trained on few images memorises them. DiffAugment shows it only augmented images --
real and fake alike, in the discriminator's update and in the generator's -- so it cannot memorise
the exact pixels, and because every op is differentiable in the images the generator still receives
gradients through the augmentation. The three policies of the paper:

- ``color``: per image, brightness ``x + U(-0.5, 0.5)``, saturation ``mean_c + (x - mean_c) * U(0, 2)``
  (nothing to do on grey images), contrast ``mean + (x - mean) * U(0.5, 1.5)``;
- ``translation``: an integer shift of up to ``translation_ratio`` (1/8) of the size along each axis,
  filling the uncovered border with ``fill``;
- ``cutout``: a ``cutout_ratio`` (1/2) square at a uniformly random centre (possibly partly outside the
  image) set to ``fill``.

    >>> aug = DiffAugment("color,translation,cutout")
    >>> out = aug(images, generator=torch.Generator().manual_seed(0))   # (B, C, H, W) in, same out

Conventions: images are float (B, C, H, W) in [-1, 1] as the generators produce them; ``fill`` is 0,
the middle grey of that range, as in the paper's code. Random parameters are drawn on the CPU from the
given ``torch.Generator`` (else torch's default one) and moved to the images' device, so one seed gives
the same augmentation on every device. Each op is a parameter sampler plus a pure function of
(images, parameters), so a draw can be recorded and replayed. As in the paper, the colour ops are not
clamped: values may leave [-1, 1] (a clamp would cut the generator's gradient wherever a pixel
saturates, which on MNIST is most of the background); translation and cutout keep the range.

Why not kornia: its samplers draw from torch's global RNG (no ``generator=`` per call), which would
tie the augmentation to every other use of that RNG and break exact resumption; and its generic
affine warps interpolate where DiffAugment shifts whole pixels. The ops here are a few tensor
expressions each, exact at zero strength and cheap next to the discriminator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: The paper's policies, in the order they are applied.
DIFFAUGMENT_OPS = ("color", "translation", "cutout")
DEFAULT_POLICY = "color,translation,cutout"

Params = dict[str, torch.Tensor]


def parse_policy(policy: str | None, known: tuple[str, ...] = DIFFAUGMENT_OPS) -> tuple[str, ...]:
    """``"color, translation"`` -> ("color", "translation"); "" or "none" -> (). Unknown names raise."""
    if policy is None:
        return ()
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    if names == ("none",):
        return ()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ValueError(f"augmentation policy {policy!r} names an op twice")
    return names


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


# -- colour ---------------------------------------------------------------------------------------
def sample_color(batch: int, generator: torch.Generator | None = None) -> Params:
    """Per-image brightness shift, saturation and contrast factors (B,) each."""
    return {"brightness": _uniform(batch, -0.5, 0.5, generator),
            "saturation": _uniform(batch, 0.0, 2.0, generator),
            "contrast": _uniform(batch, 0.5, 1.5, generator)}


def apply_color(x: torch.Tensor, params: Params) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): brightness, then saturation (C > 1 only), then contrast."""
    def per_image(name: str) -> torch.Tensor:  # (B,) -> (B, 1, 1, 1) on the images' device and dtype
        return params[name].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)

    x = x + per_image("brightness")
    if x.shape[1] > 1:  # the mean over channels is the pixel itself on grey images
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * per_image("saturation") + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * per_image("contrast") + mean


# -- translation ----------------------------------------------------------------------------------
def sample_translation(batch: int, height: int, width: int, ratio: float = 0.125,
                       generator: torch.Generator | None = None) -> Params:
    """Integer shifts (B,) in [-round(ratio*H), round(ratio*H)] down and likewise right."""
    sy, sx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    return {"dy": torch.randint(-sy, sy + 1, (batch,), generator=generator),
            "dx": torch.randint(-sx, sx + 1, (batch,), generator=generator)}


def _shift_axis(x: torch.Tensor, shift: torch.Tensor, dim: int, fill: float) -> torch.Tensor:
    """Shift every image of ``x`` by its own whole number of pixels along ``dim`` (2: rows, 3: columns);
    what moves in from outside is ``fill``. A gather, so the gradient flows back to the moved pixels."""
    size = x.shape[dim]
    # out[..., i, ...] = x[..., i - shift, ...] where that index lies inside the image
    source = torch.arange(size, device=x.device).view(1, -1) - shift.to(x.device).view(-1, 1)  # (B, size)
    inside = (source >= 0) & (source < size)
    source = source.clamp(0, size - 1)
    view = [x.shape[0], 1, 1, 1]
    view[dim] = size
    index = source.view(view).expand_as(x)
    moved = x.gather(dim, index)
    keep = inside.view(view).to(x.dtype)
    return moved * keep + fill * (1 - keep) if fill else moved * keep


def apply_translation(x: torch.Tensor, params: Params, fill: float = 0.0) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W), each image moved by (dy, dx) whole pixels."""
    return _shift_axis(_shift_axis(x, params["dy"], 2, fill), params["dx"], 3, fill)


# -- cutout ---------------------------------------------------------------------------------------
def sample_cutout(batch: int, height: int, width: int, ratio: float = 0.5,
                  generator: torch.Generator | None = None) -> Params:
    """Top-left corners (B,) of a ``round(ratio*H) x round(ratio*W)`` square whose centre is uniform
    over the image (so the square may stick out of it), and the square's size."""
    ch, cw = int(height * ratio + 0.5), int(width * ratio + 0.5)
    cy = torch.randint(0, height + (1 - ch % 2), (batch,), generator=generator)
    cx = torch.randint(0, width + (1 - cw % 2), (batch,), generator=generator)
    return {"top": cy - ch // 2, "left": cx - cw // 2, "size": torch.tensor([ch, cw])}


def apply_cutout(x: torch.Tensor, params: Params, fill: float = 0.0) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W) with each image's square set to ``fill``."""
    _, _, h, w = x.shape
    ch, cw = (int(v) for v in params["size"])
    top, left = params["top"].to(x.device).view(-1, 1), params["left"].to(x.device).view(-1, 1)
    rows, cols = torch.arange(h, device=x.device).view(1, -1), torch.arange(w, device=x.device).view(1, -1)
    in_rows = (rows >= top) & (rows < top + ch)  # (B, H)
    in_cols = (cols >= left) & (cols < left + cw)  # (B, W)
    keep = (~(in_rows[:, :, None] & in_cols[:, None, :])).unsqueeze(1).to(x.dtype)  # (B, 1, H, W)
    return x * keep + fill * (1 - keep) if fill else x * keep


# -- the policy -----------------------------------------------------------------------------------
@dataclass
class DiffAugment:
    """A DiffAugment policy: ``aug(images, generator=g)``, or ``aug.apply(images, aug.sample(shape, g))``."""

    policy: str = DEFAULT_POLICY
    translation_ratio: float = 0.125
    cutout_ratio: float = 0.5
    fill: float = 0.0

    def __post_init__(self) -> None:
        self.ops = parse_policy(self.policy)
        for name in ("translation_ratio", "cutout_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")

    def sample(self, shape: torch.Size | tuple[int, ...],
               generator: torch.Generator | None = None) -> dict[str, Params]:
        """The random parameters for a batch of ``shape`` (B, C, H, W), op by op, on the CPU."""
        b, _, h, w = shape
        params: dict[str, Params] = {}
        for op in DIFFAUGMENT_OPS:  # a fixed order, whatever the policy string's
            if op not in self.ops:
                continue
            if op == "color":
                params[op] = sample_color(b, generator)
            elif op == "translation":
                params[op] = sample_translation(b, h, w, self.translation_ratio, generator)
            else:
                params[op] = sample_cutout(b, h, w, self.cutout_ratio, generator)
        return params

    def apply(self, x: torch.Tensor, params: dict[str, Params]) -> torch.Tensor:
        """The deterministic half: ``x`` (B, C, H, W) transformed by ``params``; differentiable in ``x``."""
        if "color" in params:
            x = apply_color(x, params["color"])
        if "translation" in params:
            x = apply_translation(x, params["translation"], self.fill)
        if "cutout" in params:
            x = apply_cutout(x, params["cutout"], self.fill)
        return x

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.ops:
            return x
        if x.dim() != 4:
            raise ValueError(f"DiffAugment takes a batch (B, C, H, W), got shape {tuple(x.shape)}")
        return self.apply(x, self.sample(x.shape, generator))


def diff_augment(x: torch.Tensor, policy: str = DEFAULT_POLICY, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One-call form: ``x`` (B, C, H, W) augmented by ``policy`` (comma-separated op names)."""
    return DiffAugment(policy)(x, generator=generator)
