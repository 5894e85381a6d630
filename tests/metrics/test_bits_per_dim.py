"""Bits per dimension: uniform models give exactly 8, a density converts to the probability of its
8-bit bins, and the VAE's test likelihood reports bits/dim for the likelihoods that have them."""

from __future__ import annotations

import math

import pytest
import torch

from atelier.metrics.likelihood import bits_per_dim, vae_likelihood
from atelier.models import VAE, VAEConfig

D = 3 * 32 * 32


def test_a_uniform_model_is_exactly_8_bits_per_dim_on_every_scale() -> None:
    # discrete: every one of the 256 values has probability 1/256
    assert bits_per_dim(D * math.log(256), D) == pytest.approx(8.0, abs=1e-12)
    # a uniform density over the 256 bins of the [-1, 1] scale ([-1 - 1/255, 1 + 1/255], 256 x 2/255 wide)
    nats = -D * math.log(1 / (256 * 2 / 255))
    assert bits_per_dim(nats, D, bin_width=2 / 255) == pytest.approx(8.0, abs=1e-12)
    # the same on the [0, 1] scale, whose bins are 1/255 wide
    assert bits_per_dim(-D * math.log(255 / 256), D, bin_width=1 / 255) == pytest.approx(8.0, abs=1e-12)
    # and on the [0, 256) scale of the flow literature (bins of width 1): the density's nats unchanged
    assert bits_per_dim(D * math.log(256), D, bin_width=1.0) == pytest.approx(8.0, abs=1e-12)


def test_a_gaussian_density_converts_to_the_mass_of_its_8_bit_bins() -> None:
    """For sigma much wider than a bin, density x bin width is the bin's probability (within a few sigma;
    the relative error of a bin's mass is about (w / sigma)^2 (z^2 - 1) / 24)."""
    mean, sigma = torch.tensor(0.1, dtype=torch.float64), 0.15
    grid = torch.arange(1, 255, dtype=torch.float64) / 127.5 - 1  # interior values: no edge bins
    grid = grid[(grid - mean).abs() < 3 * sigma]
    normal = torch.distributions.Normal(mean, sigma)
    exact = -(normal.cdf(grid + 1 / 255) - normal.cdf(grid - 1 / 255)).log()  # nats of each bin
    density = -normal.log_prob(grid)
    n = grid.numel()
    assert bits_per_dim(density.sum().item(), n, bin_width=2 / 255) == \
        pytest.approx(exact.sum().item() / (n * math.log(2)), abs=5e-4)  # ~3e-4 by the formula


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="dims"):
        bits_per_dim(1.0, 0)
    with pytest.raises(ValueError, match="bin_width"):
        bits_per_dim(1.0, 10, bin_width=0.0)


@pytest.mark.parametrize("likelihood", ["logistic_mixture", "gaussian", "bernoulli"])
def test_vae_likelihood_reports_bits_per_dim_where_the_likelihood_has_them(likelihood: str) -> None:
    torch.manual_seed(0)
    model = VAE(VAEConfig(resolution=32, channels=3, likelihood=likelihood, mixture_components=3,
                          latent_dim=4, width=4, hidden=0))
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    m = vae_likelihood(model, images, iw_k=3, iw_n=4)
    if likelihood == "bernoulli":  # BCE on grey levels is no probability of 8-bit values
        assert "test_neg_elbo_bpd" not in m and m["bits_per_dim"].startswith("none")
        return
    assert m["dims"] == D
    width = None if likelihood == "logistic_mixture" else 2 / 255
    for name in ("test_neg_elbo", "test_iw_nll"):
        assert m[f"{name}_bpd"] == pytest.approx(bits_per_dim(m[f"{name}_nats"], D, bin_width=width))
        assert m[f"{name}_bpd_se"] == pytest.approx(m[f"{name}_se"] / (D * math.log(2)))
    if likelihood == "logistic_mixture":  # a probability: never negative nats, so >= 0 bits
        assert m["test_neg_elbo_bpd"] == pytest.approx(m["test_neg_elbo_nats"] / (D * math.log(2)))
        assert m["test_iw_nll_bpd"] > 0
