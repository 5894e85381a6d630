"""Reconstruction grids of a VAE: originals above their reconstructions, with MSE / PSNR / SSIM."""

from __future__ import annotations

import torch

from atelier.creative.latent import as_model_images, require_encoder


@torch.no_grad()
def reconstruction_grid(vae, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                        nrow: int = 8) -> tuple[torch.Tensor, dict]:
    """Reconstruct ``images`` (uint8 or [-1, 1], (N, C, R, R)) through the posterior means.

    Returns (grid images, metrics): the images come in bands of ``nrow`` columns, a row of
    originals followed by the row of their reconstructions (a short last band is padded with white
    tiles), so ``save_grid(grid, path, nrow=min(nrow, N))`` puts each reconstruction right under
    its original. Metrics are ``reconstruction_metrics(...).to_dict()`` (mse, psnr, ssim, ...),
    computed on the [-1, 1] scale without rounding the reconstructions to 8 bits.
    """
    from atelier.metrics.reconstruction import reconstruction_metrics

    require_encoder(vae, "reconstruction")
    images = as_model_images(vae, images)
    n = images.shape[0]
    if n == 0:
        raise ValueError("no images to reconstruct")
    if nrow < 1:
        raise ValueError(f"nrow must be positive, got {nrow}")
    originals = images.float().div(127.5).sub(1.0) if images.dtype == torch.uint8 else images.float().clamp(-1, 1)
    recon = vae.reconstruct(images, labels)
    metrics = reconstruction_metrics(originals, recon).to_dict()

    cols = min(nrow, n)
    pad = (-n) % cols
    if pad:
        blank = torch.ones((pad, *originals.shape[1:]))
        originals, recon = torch.cat([originals, blank]), torch.cat([recon, blank])
    bands = (n + pad) // cols
    grid = torch.stack([originals.view(bands, cols, *originals.shape[1:]),
                        recon.view(bands, cols, *recon.shape[1:])], dim=1)  # (bands, 2, cols, C, R, R)
    return grid.flatten(0, 2), metrics
