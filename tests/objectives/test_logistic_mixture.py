"""The discretised logistic mixture: a probability over the 256 values (for any parameters, extreme
scales included), equal to a brute-force float64 computation, exact edge bins, finite gradients, and
the mean and samples the VAE shows."""

from __future__ import annotations

import math

import pytest
import torch

from atelier.objectives.logistic_mixture import (
    discretized_logistic_log_prob,
    logistic_mixture_log_prob,
    logistic_mixture_mean,
    mixture_channels,
    sample_logistic_mixture,
)
from atelier.objectives.vae import log_likelihood

VALUES = torch.arange(256, dtype=torch.float64)
GRID = VALUES / 127.5 - 1  # the 8-bit values on the [-1, 1] scale


def brute_force(x: float, mean: float, log_scale: float) -> float:
    """log P(bin of x) in float64 from the logistic CDF itself, the edge bins open to +-inf."""
    s = math.exp(log_scale)

    def cdf(t: float) -> float:
        return 1 / (1 + math.exp(-(t - mean) / s)) if (t - mean) / s > -700 else 0.0

    def sf(t: float) -> float:  # 1 - cdf, computed without cancellation in the upper tail
        return 1 / (1 + math.exp((t - mean) / s)) if (t - mean) / s < 700 else 0.0

    hi, lo = x + 1 / 255, x - 1 / 255
    if x > mean:  # difference of survival functions: both small in the upper tail
        mass = (sf(lo) if x > -1 + 1 / 255 else 1.0) - (sf(hi) if x < 1 - 1 / 255 else 0.0)
    else:
        mass = (cdf(hi) if x < 1 - 1 / 255 else 1.0) - (cdf(lo) if x > -1 + 1 / 255 else 0.0)
    return math.log(mass) if mass > 0 else -math.inf


@pytest.mark.parametrize("mean,log_scale", [(0.0, 0.0), (0.3, -3.0), (-0.9, -7.0), (1.0, -7.0), (-1.0, -5.0),
                                            (2.5, -1.0), (-3.0, 7.0), (0.004, -6.5), (0.7, 3.0)])
def test_single_logistic_sums_to_one_over_the_256_values(mean: float, log_scale: float) -> None:
    lp = discretized_logistic_log_prob(GRID.float(), torch.tensor(mean), torch.tensor(log_scale))
    assert torch.isfinite(lp).all()
    assert lp.double().exp().sum().item() == pytest.approx(1.0, abs=2e-5)


@pytest.mark.parametrize("mean,log_scale", [(0.0, 0.0), (0.3, -3.0), (-0.2, -6.0), (0.9, -1.5), (-1.0, -4.0)])
def test_single_logistic_matches_brute_force_including_the_edge_bins(mean: float, log_scale: float) -> None:
    lp = discretized_logistic_log_prob(GRID.float(), torch.tensor(mean), torch.tensor(log_scale))
    expected = torch.tensor([brute_force(x, mean, log_scale) for x in GRID.tolist()], dtype=torch.float64)
    # far tails: compare where the brute force itself is accurate in float64
    ok = expected > -30
    torch.testing.assert_close(lp.double()[ok], expected[ok], atol=2e-4, rtol=1e-4)
    # the edge bins are the whole tails: P(0) = CDF(-1 + 1/255), P(255) = 1 - CDF(1 - 1/255)
    s = math.exp(log_scale)
    assert lp[0].item() == pytest.approx(-math.log1p(math.exp(-((-1 + 1 / 255) - mean) / s)), rel=1e-5)
    assert lp[255].item() == pytest.approx(-math.log1p(math.exp(((1 - 1 / 255) - mean) / s)), rel=1e-5)


def test_far_tail_bins_stay_finite_and_exact_where_cdf_differences_underflow() -> None:
    """A narrow logistic at -0.9 scoring x = 0.9: both CDFs round to 1 in float32, the log mass is
    still -b + log(1 - exp(-(a - b))) (about -2400 nats), not -inf."""
    mean, log_scale, x = -0.9, -7.0, 0.9
    lp = discretized_logistic_log_prob(torch.tensor(x), torch.tensor(mean), torch.tensor(log_scale)).item()
    inv_s = math.exp(7.0)
    b = inv_s * (x - mean - 1 / 255)
    expected = -b + math.log(-math.expm1(-inv_s * 2 / 255))
    assert math.isfinite(lp) and lp == pytest.approx(expected, rel=1e-5)
    # gradients are finite everywhere, edge bins and extreme scales included
    m = torch.tensor([-1.0, 0.0, 1.0, -0.9, 3.0], requires_grad=True)
    ls = torch.tensor([-9.0, 0.0, 9.0, -7.0, -7.0], requires_grad=True)
    discretized_logistic_log_prob(torch.tensor([-1.0, 0.2, 1.0, 0.9, -1.0]), m, ls).sum().backward()
    assert torch.isfinite(m.grad).all() and torch.isfinite(ls.grad).all()


def random_params(channels: int, components: int, h: int = 2, w: int = 2, *, scale: float = 2.0,
                  seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, mixture_channels(channels, components), h, w, generator=g) * scale


@pytest.mark.parametrize("components,scale", [(1, 1.0), (5, 2.0), (10, 6.0)])
def test_grey_mixture_sums_to_one_per_pixel(components: int, scale: float) -> None:
    params = random_params(1, components, scale=scale).expand(256, -1, -1, -1)
    x = GRID.float().view(256, 1, 1, 1).expand(256, 1, 2, 2)
    lp = logistic_mixture_log_prob(params, x)  # (256, 2, 2)
    torch.testing.assert_close(lp.double().exp().sum(0), torch.ones(2, 2, dtype=torch.float64), atol=5e-5, rtol=0)


@pytest.mark.parametrize("components,scale,seed", [(2, 1.5, 0), (4, 4.0, 1), (3, 8.0, 2)])
def test_two_channel_mixture_with_coupling_sums_to_one_over_all_256_squared_values(components, scale, seed) -> None:
    params = random_params(2, components, h=1, w=1, scale=scale, seed=seed)  # mixture logits, 2 means, 2 scales, 1 coefficient
    x = torch.stack(torch.meshgrid(GRID.float(), GRID.float(), indexing="ij")).unsqueeze(0)  # (1, 2, 256, 256)
    lp = logistic_mixture_log_prob(params.expand(-1, -1, 256, 256), x)
    assert lp.double().exp().sum().item() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("components,scale,seed", [(2, 1.5, 0), (3, 4.0, 1)])
def test_rgb_mixture_with_channel_coupling_sums_to_one_over_all_256_cubed_colours(components, scale, seed) -> None:
    params = random_params(3, components, h=1, w=1, scale=scale, seed=seed)
    g_b = torch.stack(torch.meshgrid(GRID.float(), GRID.float(), indexing="ij"))  # (2, 256, 256): green, blue
    total = 0.0
    for red in GRID.float().tolist():  # one image of 256 x 256 pixels per red value
        x = torch.cat([torch.full((1, 256, 256), red), g_b]).unsqueeze(0)
        lp = logistic_mixture_log_prob(params.expand(-1, -1, 256, 256), x)
        total += lp.double().exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-4)


def test_mixture_matches_a_brute_force_sum_over_components_with_coupling() -> None:
    k, c = 3, 3
    params = random_params(c, k, h=1, w=1, seed=4)
    x = torch.tensor([0.2, -0.5, 1.0]).view(1, 3, 1, 1)
    p = params.view(-1).tolist()
    logits, means, log_scales, raw = p[:k], p[k : k + k * c], p[k + k * c : k + 2 * k * c], p[k + 2 * k * c :]
    log_pi = [v - math.log(sum(math.exp(t) for t in logits)) for v in logits]
    xs = x.view(-1).tolist()
    terms = []
    for i in range(k):
        a, b, cc = (math.tanh(v) for v in raw[3 * i : 3 * i + 3])
        m = [means[3 * i], means[3 * i + 1] + a * xs[0], means[3 * i + 2] + b * xs[0] + cc * xs[1]]
        ls = [min(max(v, -7.0), 7.0) for v in log_scales[3 * i : 3 * i + 3]]
        terms.append(log_pi[i] + sum(brute_force(xs[ch], m[ch], ls[ch]) for ch in range(3)))
    expected = max(terms) + math.log(sum(math.exp(t - max(terms)) for t in terms))
    assert logistic_mixture_log_prob(params, x).item() == pytest.approx(expected, rel=1e-5)
    assert log_likelihood(params, x, "logistic_mixture").item() == pytest.approx(expected, rel=1e-5)


def test_bad_parameter_channels_are_named() -> None:
    with pytest.raises(ValueError, match="multiple of 10"):
        logistic_mixture_log_prob(torch.zeros(1, 15, 2, 2), torch.zeros(1, 3, 2, 2))


def test_mean_and_samples_lie_in_range_and_agree() -> None:
    params = random_params(3, 4, h=4, w=4, scale=0.3, seed=5)  # component means well inside [-1, 1]
    params[:, 4 + 12 : 4 + 24] = -3.0  # narrow scales, so the clamping of samples to [-1, 1] barely matters
    mean = logistic_mixture_mean(params, 3)
    assert mean.shape == (1, 3, 4, 4) and mean.min() >= -1 and mean.max() <= 1
    draws = sample_logistic_mixture(params.expand(4000, -1, -1, -1), 3, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (4000, 3, 4, 4) and draws.min() >= -1 and draws.max() <= 1
    levels = (draws + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)  # on the 8-bit grid
    torch.testing.assert_close(draws.mean(0, keepdim=True), mean, atol=0.025, rtol=0)  # ~5 standard errors
    far = params.clone()
    far[:, 4:16] = 5.0  # every component far above 1: the mean clamps to the top edge
    assert torch.equal(logistic_mixture_mean(far, 3)[:, 0], torch.ones(1, 4, 4))
