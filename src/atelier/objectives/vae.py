"""The evidence lower bound and the importance-weighted bound, in nats per image.

    log p(x) >= ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z))                       (Kingma & Welling 2014)
    log p(x) >= L_k  = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)],  z_i ~ q(z|x)       (Burda et al. 2016)

L_1 is the ELBO, L_k never decreases with k and tends to log p(x); -L_k with large k is the
negative log-likelihood estimate papers report. Every term is summed over pixels and channels
(nats per image), computed in float32 whatever the autocast precision. The likelihoods p(x|z):
``bernoulli`` (on [0, 1] intensities), ``gaussian`` (a density on the [-1, 1] scale) and
``logistic_mixture`` (a probability of the 8-bit values, :mod:`atelier.objectives.logistic_mixture`);
:func:`atelier.metrics.likelihood.bits_per_dim` puts them on one scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from atelier.objectives.logistic_mixture import logistic_mixture_log_prob

LOG_2PI = math.log(2 * math.pi)


def targets(x: torch.Tensor, likelihood: str, *, binarize: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """What the likelihood scores: [0, 1] intensities (optionally binarised) for Bernoulli, x itself (on
    the [-1, 1] scale) for the Gaussian and the logistic mixture."""
    if likelihood in ("gaussian", "logistic_mixture"):
        return x.float()
    t = (x.float() + 1) / 2
    if binarize:
        t = torch.bernoulli(t.cpu(), generator=generator).to(x.device) if generator is not None else torch.bernoulli(t)
    return t


def log_likelihood(params: torch.Tensor, target: torch.Tensor, likelihood: str,
                   log_sigma: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x|z) summed over pixels: (B, ...) -> (B,). ``params`` has the target's shape, except for
    the logistic mixture, whose (B, P, H, W) parameters are laid out as in
    :mod:`atelier.objectives.logistic_mixture` (the target's channels and P give the components)."""
    params = params.float()
    if likelihood == "logistic_mixture":
        return logistic_mixture_log_prob(params, target).flatten(1).sum(1)
    if likelihood == "bernoulli":
        ll = -F.binary_cross_entropy_with_logits(params, target, reduction="none")
    elif likelihood == "gaussian":
        log_sigma = log_sigma.float()
        ll = -0.5 * (((target - params) / log_sigma.exp()) ** 2 + LOG_2PI) - log_sigma
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}")
    return ll.flatten(1).sum(1)


def kl_standard_normal(mean: torch.Tensor, logvar: torch.Tensor, *, per_dim: bool = False) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)): (B,) summed over dimensions, or (B, D) with ``per_dim``."""
    mean, logvar = mean.float(), logvar.float()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl if per_dim else kl.sum(1)


def log_normal(z: torch.Tensor, mean: torch.Tensor | None = None, logvar: torch.Tensor | None = None) -> torch.Tensor:
    """log N(z; mean, exp(logvar)) summed over the last dimension (standard normal by default)."""
    if mean is None:
        return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)
    return -0.5 * ((z - mean).pow(2) / logvar.exp() + logvar + LOG_2PI).sum(-1)


def kl_weight(step: int, beta: float, warmup_steps: int) -> float:
    """beta, ramped linearly from 0 over the first ``warmup_steps`` training steps (KL warm-up)."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, (step + 1) / warmup_steps)


def elbo_terms(model, x: torch.Tensor, labels: torch.Tensor | None = None, *, beta: float = 1.0,
               target: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Per-image (B,) terms from one posterior sample: ``recon`` = log p(x|z), ``kl``, ``elbo`` =
    recon - kl, and ``loss`` = kl * beta - recon (the beta-weighted negative ELBO to minimise)."""
    cfg = model.config
    out = model(x, labels, generator=generator)
    t = targets(x, cfg.likelihood) if target is None else target
    recon = log_likelihood(out["params"], t, cfg.likelihood, model.log_sigma)
    kl = model.kl_term(out["mean"], out["logvar"], out["z"]) if hasattr(model, "kl_term") else \
        kl_standard_normal(out["mean"], out["logvar"])
    return {"recon": recon, "kl": kl, "elbo": recon - kl, "loss": beta * kl - recon}


@torch.no_grad()
def importance_weighted_bound(model, x: torch.Tensor, labels: torch.Tensor | None = None, *, k: int = 100,
                              target: torch.Tensor | None = None, generator: torch.Generator | None = None,
                              chunk: int = 100) -> torch.Tensor:
    """L_k for each image of x (B,), with k posterior samples per image drawn ``chunk`` at a time."""
    cfg = model.config
    mean, logvar = model.encode(x, labels)
    mean, logvar = mean.float(), logvar.float()
    t = targets(x, cfg.likelihood) if target is None else target
    log_w = []
    for start in range(0, k, chunk):
        m = min(chunk, k - start)
        z = model.reparameterize(mean.unsqueeze(0).expand(m, -1, -1), logvar.unsqueeze(0).expand(m, -1, -1),
                                 generator=generator)  # (m, B, D)
        flat = z.reshape(-1, z.shape[-1])
        lab = None
        if labels is not None:
            lab = labels.unsqueeze(0).expand(m, *labels.shape).reshape(-1, *labels.shape[1:])
        params = model.decode(flat, lab).float()
        rep = t.unsqueeze(0).expand(m, *t.shape).reshape(-1, *t.shape[1:])
        ll = log_likelihood(params, rep, cfg.likelihood, model.log_sigma).view(m, -1)
        log_prior = model.log_prior(z) if hasattr(model, "log_prior") else log_normal(z)
        log_w.append(ll + log_prior - log_normal(z, mean, logvar))
    log_w = torch.cat(log_w)  # (k, B)
    return torch.logsumexp(log_w, 0) - math.log(k)
