"""Likelihood of held-out data under a VAE: the negative ELBO and the importance-weighted NLL, in nats
per image and, where the likelihood allows, in bits per dimension.

With the Bernoulli likelihood on grey-level pixels (the classic VAE's summed binary cross-entropy) the
nats compare between models scored the same way only: it is no normalised distribution of grey levels,
so it has no bits/dim. Numbers comparable with the binarised-MNIST NLL literature (~80-90 nats) need
binarised data (``binarize=True``), where test images are binarised once with a fixed seed.

Bits per dimension (:func:`bits_per_dim`) put every likelihood of 8-bit images on the scale of the
colour-VAE literature (CIFAR-10 tables): the negative log-probability of the discrete 8-bit image in
bits, divided by D = C x H x W. A discrete likelihood (the logistic mixture) converts directly; a
density over a continuous scale (the Gaussian) is turned into a probability of the 8-bit bins by
multiplying it by the bin width: P(bin) ~ p(x) * w, with w = 2/255 on the [-1, 1] scale (the distance
between neighbouring 8-bit values; 1/255 on [0, 1]). So -log P = -log p(x) - D log w = -log p(x) + D ln
127.5 on the [-1, 1] scale. This is the standard "density on the [0, 256) scale" conversion (Theis et
al. 2016), with 8-bit values at the integers; it is exact for a density constant over each bin (a
uniform density over the 256 bins gives exactly 8 bits/dim) and close whenever sigma is much wider
than a bin. It does not give the edge bins their tails, which the logistic mixture does.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from atelier.data import to_float
from atelier.objectives.vae import elbo_terms, importance_weighted_bound, targets

BIN_WIDTH_MINUS1_1 = 2.0 / 255.0  # one 8-bit step on the [-1, 1] scale
ELEMENT_BUDGET = 2**23  # decoder outputs (floats) per call while scoring: bounds the memory of the likelihood


def bits_per_dim(nats_per_image: float | torch.Tensor, dims: int, *,
                 bin_width: float | None = None) -> float | torch.Tensor:
    """Negative log-likelihood in nats per image -> bits per dimension of the 8-bit image.

    ``dims`` is D = C x H x W. ``bin_width`` None: the nats are already those of a probability of the
    discrete values (logistic mixture, binarised Bernoulli). Otherwise they are those of a density over a
    continuous scale on which one 8-bit step is ``bin_width`` wide (2/255 on [-1, 1], 1/255 on [0, 1]),
    and ``-D ln(bin_width)`` converts them to the probability of the bins: (nats - D ln w) / (D ln 2)."""
    if dims < 1:
        raise ValueError(f"dims must be >= 1, got {dims}")
    if bin_width is not None and not bin_width > 0:
        raise ValueError(f"bin_width must be > 0, got {bin_width}")
    nats = nats_per_image - (dims * math.log(bin_width) if bin_width is not None else 0.0)
    return nats / (dims * math.log(2.0))


def bits_per_dim_basis(config) -> tuple[float | None, str] | None:
    """How a VAE's nats become bits/dim: (``bin_width`` for :func:`bits_per_dim`, a description), or
    None for a likelihood without bits/dim (Bernoulli on grey levels)."""
    likelihood = config.likelihood
    if likelihood == "logistic_mixture":
        return None, "discrete 8-bit likelihood (discretised logistic mixture)"
    if likelihood == "gaussian":
        return BIN_WIDTH_MINUS1_1, "Gaussian density on [-1, 1] times the 8-bit bin width 2/255"
    if likelihood == "bernoulli" and getattr(config, "binarize", False):
        return None, "binary pixels (1 bit at most per dimension, not 8-bit bits/dim)"
    return None


def _target(model, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return targets(x, model.config.likelihood, binarize=model.config.binarize, generator=g)


def vae_likelihood(model, images: torch.Tensor, labels: torch.Tensor | None = None, *, iw_k: int = 100,
                   iw_n: int = 1000, seed: int = 0, batch_size: int = 500, progress: bool = False,
                   use_ema: bool = True) -> dict:
    """Negative ELBO over all ``images`` (uint8) and, with ``iw_k`` > 0, the k-sample importance-weighted
    NLL over the first ``iw_n`` of them, with the averaged (EMA) networks unless ``use_ema=False``.
    Returns plain floats with their standard errors, in nats per image and (``*_bpd``) bits/dim."""
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
    per_image = _decoder_elements(model, images)
    batch_size = max(1, min(batch_size, ELEMENT_BUDGET // per_image))
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
        # bound the (k x images) decoder outputs per call by ELEMENT_BUDGET
        chunk = max(1, min(100, iw_k, ELEMENT_BUDGET // per_image))
        step = max(1, min(batch_size, ELEMENT_BUDGET // (chunk * per_image)))
        g = torch.Generator().manual_seed(seed)
        for i in tqdm(range(0, n, step), desc=f"IW bound (k={iw_k})", leave=False, disable=not progress):
            x = to_float(images[i : min(i + step, n)]).to(device)
            lab = labels[i : min(i + step, n)].to(device) if labels is not None else None
            bounds.append(importance_weighted_bound(model, x, lab, k=iw_k, target=_target(model, x, g), generator=g,
                                                    chunk=chunk).cpu())
        nll = -torch.cat(bounds).double()
        out.update({"test_iw_nll_nats": float(nll.mean()),
                    "test_iw_nll_se": float(nll.std() / math.sqrt(len(nll))) if len(nll) > 1 else 0.0,
                    "iw_k": iw_k, "iw_n": n})
    out.update(_in_bits(model.config, images[0].numel(), out))
    model.train(was_training)
    return out


def _decoder_elements(model, images: torch.Tensor) -> int:
    """Floats the decoder outputs per image (its parameters per pixel x pixels)."""
    cfg = model.config
    per_pixel = cfg.output_channels() if hasattr(cfg, "output_channels") else images.shape[1]
    return max(1, per_pixel * images.shape[-1] * images.shape[-2])


def _in_bits(config, dims: int, nats: dict) -> dict:
    """The bits/dim of the negative ELBO and IW NLL (and their standard errors), with their basis."""
    basis = bits_per_dim_basis(config)
    if basis is None:
        return {"bits_per_dim": "none: the Bernoulli likelihood of grey levels is not a normalised probability "
                                "of 8-bit values (use logistic_mixture or gaussian, or binarize)"}
    width, text = basis
    out: dict = {"dims": dims, "bits_per_dim": text}
    for name in ("test_neg_elbo", "test_iw_nll"):
        if f"{name}_nats" in nats:
            out[f"{name}_bpd"] = bits_per_dim(nats[f"{name}_nats"], dims, bin_width=width)
            out[f"{name}_bpd_se"] = nats[f"{name}_se"] / (dims * math.log(2.0))
    return out
