"""Latent traversals: change one latent dimension at a time and watch what it controls.

Row r of the result holds the base latent with dimension ``dims[r]`` set to each of ``values`` in
turn, every other coordinate left as it was. For a VAE the dimensions can be ranked by how much
information the encoder puts into them, measured by the KL divergence of q(z_d|x) from the prior
averaged over real images: a dimension with KL ~0 is ignored by the encoder (posterior collapse),
so traversing it changes nothing; the high-KL dimensions are the ones worth looking at.
"""

from __future__ import annotations

import torch

from atelier.creative.latent import as_model_images, fixed_labels, require_encoder, seed_latents
from atelier.report.grid import MAX_GRID_IMAGES

DEFAULT_VALUES = (-3.0, -2.25, -1.5, -0.75, 0.0, 0.75, 1.5, 2.25, 3.0)  # torch.linspace(-3, 3, 9)


def kl_per_dimension(vae, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over ``images`` (uint8 or [-1, 1]) of KL(q(z_d|x) || N(0, 1)) for each dimension d, (D,)."""
    from atelier.objectives.vae import kl_standard_normal

    require_encoder(vae, "ordering dimensions by KL")
    images = as_model_images(vae, images, "KL images")
    if images.shape[0] == 0:
        raise ValueError("ordering dimensions by KL needs at least one image")
    mean, logvar = vae.encode_images(images, labels)
    return kl_standard_normal(mean, logvar, per_dim=True).mean(0)


def dims_by_kl(kl: torch.Tensor) -> list[int]:
    """Dimension indices, highest KL (most informative) first; ties keep index order."""
    return torch.argsort(kl, descending=True, stable=True).tolist()


def _check_dims(dims, latent_dim: int) -> list[int]:
    if isinstance(dims, str):
        dims = [int(d) for d in dims.split(",") if d.strip()]
    dims = [int(d) for d in dims]
    if not dims:
        raise ValueError("dims is empty: name at least one latent dimension")
    bad = [d for d in dims if not 0 <= d < latent_dim]
    if bad:
        raise ValueError(f"latent dimensions {bad} are out of range: this model has dimensions 0..{latent_dim - 1}")
    return dims


def _base_latent(model, base, base_image, label, seed) -> torch.Tensor:
    d = model.config.latent_dim
    given = sum(x is not None for x in (base, base_image, seed))
    if given > 1:
        raise ValueError("give at most one of base (a latent), base_image and seed")
    if base is not None:
        base = torch.as_tensor(base, dtype=torch.float32).reshape(-1)
        if base.numel() != d:
            raise ValueError(f"base must be a latent of {d} values, got {base.numel()}")
        return base.clone()
    if base_image is not None:
        require_encoder(model, "traversing around a real image")
        image = as_model_images(model, torch.as_tensor(base_image)[None], "base_image")
        mean, _ = model.encode_images(image, fixed_labels(model, label, 1))
        return mean[0]
    if seed is not None:
        return seed_latents(model, [seed])[0]
    return torch.zeros(d)


def traverse(model, *, dims=None, values=None, base=None, base_image=None, label: int | None = None,
             seed: int | None = None, order_by_kl_data: torch.Tensor | None = None,
             order_by_kl_labels: torch.Tensor | None = None, max_rows: int = 10):
    """Traversal grid of ``model`` (GAN or VAE).

    Args:
        dims: latent dimensions, one row each (list or "0,3,5"). Default: the first ``max_rows``, or
            with ``order_by_kl_data`` the ``max_rows`` highest-KL ones.
        values: the values each dimension is set to, one column each (default -3 .. 3 in 9 steps).
        base: the latent held fixed elsewhere (D,); default zeros, the prior's mode. Alternatives:
            ``seed`` (that seed's prior latent) or ``base_image`` (a VAE's posterior mean of one
            real image (C, R, R)).
        label: class for every image of a conditional model (default 0).
        order_by_kl_data: VAE only: real images (uint8) whose mean per-dimension KL ranks the
            dimensions; ``order_by_kl_labels`` are their labels for a conditional VAE.

    At most :data:`~atelier.report.grid.MAX_GRID_IMAGES` images (rows x columns) are drawn.

    Returns:
        (images (rows * columns, C, R, R) in [-1, 1], row by row; the dims used (one per row);
        info: ``values`` (columns,), ``base`` (D,), ``latents`` (rows * columns, D) and, when
        ranked by KL, ``kl_per_dim`` (D,) and ``kl_order`` (all dims, highest KL first)).
    """
    d = getattr(model.config, "latent_dim", None)
    if d is None:
        raise ValueError(f"a traversal sweeps the dimensions of a latent vector; a {getattr(model, 'family', '?')} "
                         "model has none (a flow model's noise is an image: use interpolation or edit instead)")
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ValueError(f"max_rows must be a positive integer, got {max_rows!r}")
    values = torch.as_tensor(DEFAULT_VALUES if values is None else values, dtype=torch.float32).reshape(-1)
    if values.numel() == 0:
        raise ValueError("values is empty: give at least one value to set each dimension to")
    info: dict = {}
    if order_by_kl_data is not None:
        kl = kl_per_dimension(model, order_by_kl_data, order_by_kl_labels)
        info["kl_per_dim"] = kl
        info["kl_order"] = dims_by_kl(kl)
    if dims is None:
        dims = info["kl_order"][:max_rows] if "kl_order" in info else list(range(min(d, max_rows)))
    dims = _check_dims(dims, d)
    if len(dims) * values.numel() > MAX_GRID_IMAGES:
        raise ValueError(f"a traversal of {len(dims)} dimensions x {values.numel()} values is "
                         f"{len(dims) * values.numel():,} images; at most {MAX_GRID_IMAGES} (one grid) are drawn")
    labels_one = fixed_labels(model, label, 1)  # validates the label before any work
    base_z = _base_latent(model, base, base_image, label, seed)

    latents = base_z.repeat(len(dims) * values.numel(), 1)  # (rows * cols, D)
    for r, dim in enumerate(dims):
        latents[r * values.numel() : (r + 1) * values.numel(), dim] = values
    labels = labels_one.expand(latents.shape[0]).contiguous() if labels_one is not None else None
    images = model.generate(latents, labels)
    info.update(values=values, base=base_z, latents=latents)
    return images, dims, info
