"""Paths through latent space (lerp, slerp) and the small checks every exploration tool shares.

Why slerp for Gaussian latents: a draw z ~ N(0, I_D) almost never lies near the origin. Its norm
concentrates around sqrt(D) (for D = 512 nearly all draws have norms within a few percent of
22.6), so the prior's mass sits in a thin shell. The straight line between two draws cuts through
the inside of that shell: two independent draws are nearly orthogonal, so the midpoint of the line
has norm about sqrt(D / 2), roughly 0.71 sqrt(D), a radius the generator essentially never saw
during training, and images there tend to be washed out or blurred. Spherical interpolation (Shoemake
1985, suggested for generative models by White 2016) follows the great-circle arc between the two
directions instead, so the intermediate latents keep a typical norm and every frame of the path looks
like a sample from the prior.
"""

from __future__ import annotations

import numbers

import torch

#: |cos(angle)| above which two latents count as parallel and slerp falls back to lerp (about 1.8 degrees).
PARALLEL_COS = 0.9995
#: The most positions (frames) on one interpolation path; every frame is decoded and kept in memory.
MAX_STEPS = 1024
#: The most seeds one call turns into latents.
MAX_SEEDS = 10_000


def _as_t(t, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``t`` as a float64 tensor, and whether it was a scalar."""
    t = torch.as_tensor(t, dtype=torch.float64, device=like.device)
    if t.dim() > 1:
        raise ValueError(f"t must be a scalar or a 1-d tensor of positions, got shape {tuple(t.shape)}")
    return t, t.dim() == 0


def _coefficients_shape(t: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """(T,) -> (T, 1, ..., 1) so it broadcasts against latents of ``batch_dims`` leading dims plus D."""
    return t.reshape(t.shape + (1,) * (batch_dims + 1))


def lerp(a: torch.Tensor, b: torch.Tensor, t) -> torch.Tensor:
    """Straight-line interpolation (1 - t) a + t b.

    ``a``, ``b``: latents (D,) or (N, D) (broadcast against each other). ``t``: a scalar (result
    shaped like the latents) or a 1-d tensor of T positions (result (T, D) or (T, N, D)).
    """
    a, b = torch.broadcast_tensors(a, b)
    t, scalar = _as_t(t, a)
    tt = t if scalar else _coefficients_shape(t, a.dim() - 1)
    out = (1 - tt) * a.double() + tt * b.double()
    return out.to(a.dtype)


def slerp(a: torch.Tensor, b: torch.Tensor, t) -> torch.Tensor:
    """Spherical interpolation sin((1 - t) w) / sin w * a + sin(t w) / sin w * b, w the angle
    between ``a`` and ``b``; shapes as for :func:`lerp`. See the module docstring for why.

    Pairs that are (nearly) parallel or anti-parallel (|cos w| > ``PARALLEL_COS``) have no
    well-defined arc; for them this returns the straight line instead (for parallel pairs the two
    agree anyway), so the result never holds NaN. Endpoints (t = 0, 1) return ``a`` and ``b``.
    """
    a, b = torch.broadcast_tensors(a, b)
    if a.dim() == 0:
        raise ValueError("slerp needs vectors (D,) or batches (N, D), got scalars")
    t, scalar = _as_t(t, a)
    a64, b64 = a.double(), b.double()
    norms = a64.norm(dim=-1, keepdim=True) * b64.norm(dim=-1, keepdim=True)
    cos = ((a64 * b64).sum(-1, keepdim=True) / norms.clamp_min(1e-300)).clamp(-1.0, 1.0)
    parallel = (cos.abs() > PARALLEL_COS) | (norms == 0)  # (..., 1)
    omega = torch.acos(cos)
    sin_omega = torch.where(parallel, torch.ones_like(omega), torch.sin(omega))
    tt = t if scalar else _coefficients_shape(t, a.dim() - 1)
    wa = torch.sin((1 - tt) * omega) / sin_omega
    wb = torch.sin(tt * omega) / sin_omega
    wa = torch.where(parallel, 1 - tt + torch.zeros_like(wa), wa)
    wb = torch.where(parallel, tt + torch.zeros_like(wb), wb)
    out = wa * a64 + wb * b64
    return out.to(a.dtype)


INTERPOLATIONS = {"slerp": slerp, "lerp": lerp}


def interpolation(method: str):
    """The path function named ``method`` ("slerp" or "lerp")."""
    if method not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation method {method!r}; use one of {', '.join(INTERPOLATIONS)}")
    return INTERPOLATIONS[method]


def positions(steps: int) -> torch.Tensor:
    """``steps`` evenly spaced positions 0 .. 1, both ends included (2 <= steps <= :data:`MAX_STEPS`)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be an integer from 2 (both ends are included) to {MAX_STEPS}, got {steps!r}")
    return torch.linspace(0.0, 1.0, steps, dtype=torch.float64)


def seed_latents(model, seeds, *, truncation: float | None = None) -> torch.Tensor:
    """One prior latent per seed, (len(seeds), D): the latent ``model.sample_latents(1, ...)`` draws
    from ``torch.Generator().manual_seed(seed)``, so a seed names the same latent everywhere."""
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if not 1 <= len(seeds) <= MAX_SEEDS:
        raise ValueError(f"give from 1 to {MAX_SEEDS:,} seeds, got {len(seeds):,}")
    rows = [model.sample_latents(1, generator=torch.Generator().manual_seed(int(s)), truncation=truncation)
            for s in seeds]
    return torch.cat(rows)


def model_kind(model) -> str:
    family = getattr(model, "family", "") or type(model).__name__
    conditional = "class-conditional" if getattr(model, "conditional", False) else "unconditional"
    return f"{conditional} {family.upper()}"


def require_encoder(model, task: str) -> None:
    """Raise a clear ValueError when ``task`` needs to encode images and ``model`` cannot (a GAN)."""
    if not callable(getattr(model, "encode_images", None)):
        raise ValueError(f"{task} needs an encoder that maps images to latents, and this {model_kind(model)} "
                         "has none: use a VAE (a GAN only decodes), or work from seeds instead")


def require_conditional(model, task: str) -> None:
    if not getattr(model, "conditional", False):
        raise ValueError(f"{task} needs a class-conditional model; this one is an {model_kind(model)}")


def check_class(model, label, what: str = "class") -> int:
    """Validate one class index of a conditional model and return it as an int."""
    k = model.config.num_classes
    if isinstance(label, bool) or not (isinstance(label, numbers.Integral) or torch.is_tensor(label) and label.numel() == 1):
        raise ValueError(f"{what} must be a class index, got {label!r}")
    label = int(label)
    if not 0 <= label < k:
        raise ValueError(f"{what} {label} is out of range: this model has classes 0..{k - 1}")
    return label


def fixed_labels(model, label: int | None, n: int) -> torch.Tensor | None:
    """Labels for ``n`` images of one class: ``label`` (default 0) for a conditional model, None for
    an unconditional one (which refuses a label)."""
    if not getattr(model, "conditional", False):
        if label is not None:
            raise ValueError(f"a label needs a class-conditional model; this one is an {model_kind(model)}")
        return None
    return torch.full((n,), check_class(model, 0 if label is None else label, "label"), dtype=torch.long)


def as_model_images(model, images: torch.Tensor, what: str = "images") -> torch.Tensor:
    """Check that uint8 / [-1, 1] images (N, C, R, R) match the model's channels and resolution."""
    images = torch.as_tensor(images)
    cfg = model.config
    want = (cfg.channels, cfg.resolution, cfg.resolution)
    if images.dim() != 4 or tuple(images.shape[1:]) != want:
        raise ValueError(f"{what} must have shape (N, {want[0]}, {want[1]}, {want[2]}) to match the model, "
                         f"got {tuple(images.shape)}")
    return images
