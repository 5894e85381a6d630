"""Latent arithmetic: result = mean(A) - mean(B) + C, "A is to B as ? is to C" (Radford et al. 2016).

Averaging a group of latents before subtracting cancels what the members do not share, leaving a
direction for what they do (a class, a stroke width, a slant); adding it to C moves C that way.
VAEs take the groups as real images (encoded to posterior means); any model takes them as seeds.
Image helpers return a (2 * len(C), C, R, R) stack for ``save_grid(..., nrow=2)``: one row per C
holding [C, result].
"""

from __future__ import annotations

import torch

from atelier.creative.latent import as_model_images, fixed_labels, require_encoder, seed_latents


def _group(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be latents (D,) or a non-empty group (N, D), got shape {tuple(x.shape)}")
    return x


def latent_arithmetic(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """mean(a) - mean(b) + c for latent groups a (Na, D), b (Nb, D) and c (Nc, D) (or single (D,)
    latents); returns (Nc, D)."""
    a, b, c = _group(a, "a"), _group(b, "b"), _group(c, "c")
    if not a.shape[1] == b.shape[1] == c.shape[1]:
        raise ValueError(f"latent sizes differ: a {a.shape[1]}, b {b.shape[1]}, c {c.shape[1]}")
    return a.mean(0) - b.mean(0) + c


def _interleave(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """[f0, s0, f1, s1, ...]: one grid row per pair with nrow=2."""
    return torch.stack([first, second], dim=1).flatten(0, 1)


def _as_float(images: torch.Tensor) -> torch.Tensor:
    images = torch.as_tensor(images)
    return images.float().div(127.5).sub(1.0) if images.dtype == torch.uint8 else images.float()


@torch.no_grad()
def image_arithmetic(vae, images_a: torch.Tensor, images_b: torch.Tensor, images_c: torch.Tensor, *,
                     labels_a: torch.Tensor | None = None, labels_b: torch.Tensor | None = None,
                     labels_c: torch.Tensor | None = None, result_labels: torch.Tensor | None = None,
                     return_latents: bool = False):
    """Encode groups A, B and the images C (all uint8 or [-1, 1], (N, C, R, R)) to posterior means
    and decode mean(A) - mean(B) + mean(c) for each c.

    A conditional VAE needs every group's labels; results are decoded with ``result_labels``
    (default ``labels_c``). Returns (2 * len(C), C, R, R) in [-1, 1]: per C, the C image then the
    result; with ``return_latents`` also the result latents (len(C), D).
    """
    require_encoder(vae, "image arithmetic")
    groups = {}
    for name, images, labels in (("A", images_a, labels_a), ("B", images_b, labels_b), ("C", images_c, labels_c)):
        images = as_model_images(vae, images, f"images_{name.lower()}")
        if images.shape[0] == 0:
            raise ValueError(f"group {name} is empty")
        if vae.conditional and labels is None:
            raise ValueError(f"this VAE is class-conditional: pass labels_{name.lower()}")
        groups[name] = (images, vae.encode_images(images, labels)[0])
    z = latent_arithmetic(groups["A"][1], groups["B"][1], groups["C"][1])
    decode_labels = result_labels if result_labels is not None else labels_c
    results = vae.generate(z, decode_labels)
    out = _interleave(_as_float(groups["C"][0]).clamp(-1, 1), results)
    return (out, z) if return_latents else out


def seed_arithmetic(model, seeds_a, seeds_b, seeds_c, *, label: int | None = None,
                    truncation: float | None = None, return_latents: bool = False):
    """Latent arithmetic on prior latents named by seeds (any model): per seed c, the image of c
    then that of mean(A) - mean(B) + c; a conditional model draws everything as class ``label``
    (default 0). Returns (2 * len(seeds_c), C, R, R) in [-1, 1] (and the result latents); at most
    ``MAX_GRID_IMAGES // 2`` seeds C (one grid)."""
    from atelier.report.grid import MAX_GRID_IMAGES

    seeds_c = [seeds_c] if isinstance(seeds_c, int) else list(seeds_c)
    if len(seeds_c) > MAX_GRID_IMAGES // 2:
        raise ValueError(f"at most {MAX_GRID_IMAGES // 2} seeds C (two images each, one grid), got {len(seeds_c):,}")
    za = seed_latents(model, seeds_a, truncation=truncation)
    zb = seed_latents(model, seeds_b, truncation=truncation)
    zc = seed_latents(model, seeds_c, truncation=truncation)
    z = latent_arithmetic(za, zb, zc)
    labels = fixed_labels(model, label, 2 * zc.shape[0])
    images = model.generate(_interleave(zc, z), labels)
    return (images, z) if return_latents else images
