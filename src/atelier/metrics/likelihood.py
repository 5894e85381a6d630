"""Likelihood of held-out data under a VAE: the negative ELBO and the importance-weighted NLL.

Both are in nats per image (summed over pixels). With the Bernoulli likelihood on grey-level pixels
(the classic VAE's summed binary cross-entropy) the numbers compare between models scored the same
way; numbers comparable with the NLL literature (~80-90 nats on MNIST) need binarised data
(``binarize=True``), where test images are binarised once with a fixed seed.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from atelier.data import to_float
from atelier.objectives.vae import elbo_terms, importance_weighted_bound, targets


def _target(model, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return targets(x, model.config.likelihood, binarize=model.config.binarize, generator=g)


def vae_likelihood(model, images: torch.Tensor, labels: torch.Tensor | None = None, *, iw_k: int = 100,
                   iw_n: int = 1000, seed: int = 0, batch_size: int = 500, progress: bool = False,
                   use_ema: bool = True) -> dict:
    """Negative ELBO over all ``images`` (uint8) and, with ``iw_k`` > 0, the k-sample importance-weighted
    NLL over the first ``iw_n`` of them, with the averaged (EMA) networks unless ``use_ema=False``.
    Returns plain floats with their standard errors."""
    if use_ema and hasattr(model, "averaged"):
        with model.averaged():
            return vae_likelihood(model, images, labels, iw_k=iw_k, iw_n=iw_n, seed=seed, batch_size=batch_size,
                                  progress=progress, use_ema=False)
    with torch.no_grad():
        return _likelihood(model, images, labels, iw_k, iw_n, seed, batch_size, progress)


def _likelihood(model, images, labels, iw_k, iw_n, seed, batch_size, progress) -> dict:
    was_training = model.training
    model.eval()
    device = model.log_sigma.device
    labels = labels if model.conditional else None
    g = torch.Generator().manual_seed(seed)
    neg_elbo, recon, kl = [], [], []
    for i in tqdm(range(0, images.shape[0], batch_size), desc="test ELBO", leave=False, disable=not progress):
        x = to_float(images[i : i + batch_size]).to(device)
        lab = labels[i : i + batch_size].to(device) if labels is not None else None
        t = elbo_terms(model, x, lab, target=_target(model, x, g), generator=g)
        neg_elbo.append(-t["elbo"].cpu())
        recon.append(-t["recon"].cpu())
        kl.append(t["kl"].cpu())
    neg_elbo_t = torch.cat(neg_elbo).double()
    out = {
        "test_neg_elbo_nats": float(neg_elbo_t.mean()),
        "test_neg_elbo_se": float(neg_elbo_t.std() / math.sqrt(len(neg_elbo_t))) if len(neg_elbo_t) > 1 else 0.0,
        "test_recon_nats": float(torch.cat(recon).double().mean()),
        "test_kl_nats": float(torch.cat(kl).double().mean()),
        "n": int(images.shape[0]),
        "likelihood": model.config.likelihood + (" (binarised)" if model.config.binarize else " (grey-level targets)"
                                                 if model.config.likelihood == "bernoulli" else ""),
    }
    if iw_k > 0:
        n = min(iw_n, images.shape[0])
        bounds = []
        step = max(1, min(batch_size, 10_000 // iw_k))  # bound the (k x batch) decoder work per call
        g = torch.Generator().manual_seed(seed)
        for i in tqdm(range(0, n, step), desc=f"IW bound (k={iw_k})", leave=False, disable=not progress):
            x = to_float(images[i : min(i + step, n)]).to(device)
            lab = labels[i : min(i + step, n)].to(device) if labels is not None else None
            bounds.append(importance_weighted_bound(model, x, lab, k=iw_k, target=_target(model, x, g), generator=g).cpu())
        nll = -torch.cat(bounds).double()
        out.update({"test_iw_nll_nats": float(nll.mean()),
                    "test_iw_nll_se": float(nll.std() / math.sqrt(len(nll))) if len(nll) > 1 else 0.0,
                    "iw_k": iw_k, "iw_n": n})
    model.train(was_training)
    return out
