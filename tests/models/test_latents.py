"""Prior latents: the truncated normal by inverse CDF is exact, bounded in time for any T, reproducible."""

from __future__ import annotations

import math
import time

import pytest
import torch
from hypothesis import given, settings, strategies as st

from atelier.models.latents import check_truncation, normal_latents

# T from far below float32's range to far above any useful value; all must return at once, within [-T, T]
truncations = st.floats(min_value=1e-300, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=25, deadline=None)
@given(t=truncations, n=st.integers(0, 40), dim=st.integers(1, 12), seed=st.integers(0, 2**31))
def test_truncated_latents_lie_within_t_and_are_reproducible(t: float, n: int, dim: int, seed: int) -> None:
    start = time.perf_counter()
    z = normal_latents(n, dim, generator=torch.Generator().manual_seed(seed), truncation=t)
    assert time.perf_counter() - start < 1.0  # one uniform draw per coordinate, whatever T is
    assert z.shape == (n, dim) and z.dtype == torch.float32
    assert torch.isfinite(z).all()
    assert (z.double().abs() <= t).all()  # within T exactly, float32 rounding included
    again = normal_latents(n, dim, generator=torch.Generator().manual_seed(seed), truncation=t)
    assert torch.equal(z, again)


@pytest.mark.parametrize("t", [1e-30, 1e-20, 1e-8, 1e-3])
def test_tiny_truncation_keeps_its_resolution(t: float) -> None:
    """No cancellation for tiny T: the draws fill [-T, T] (not all zeros, not all +-T)."""
    z = normal_latents(4000, 2, generator=torch.Generator().manual_seed(0), truncation=t).double() / t
    assert z.abs().max() <= 1 and z.abs().max() > 0.99
    assert z.unique().numel() > 0.99 * z.numel()
    # for T << 1 the normal density is flat on [-T, T]: z / T is uniform on [-1, 1]
    assert abs(float(z.mean())) < 0.05 and abs(float(z.var()) - 1 / 3) < 0.03


def test_t_below_float32s_range_gives_zeros() -> None:
    z = normal_latents(10, 3, generator=torch.Generator().manual_seed(0), truncation=1e-50)
    assert torch.equal(z, torch.zeros(10, 3))


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0, 3.0])
def test_truncated_latents_follow_the_truncated_normal(t: float) -> None:
    """Kolmogorov-Smirnov distance to the truncated normal's CDF is at the level of sampling noise."""
    z = normal_latents(20000, 1, generator=torch.Generator().manual_seed(1), truncation=t).double().flatten()
    z, _ = z.sort()
    phi = lambda x: 0.5 * (1 + torch.special.erf(x / math.sqrt(2)))  # noqa: E731
    cdf = (phi(z) - phi(torch.tensor(-t, dtype=torch.float64))) / (1 - 2 * phi(torch.tensor(-t, dtype=torch.float64)))
    empirical = torch.arange(1, z.numel() + 1, dtype=torch.float64) / z.numel()
    assert float((cdf - empirical).abs().max()) < 1.6 / math.sqrt(z.numel())  # the 99% KS quantile is 1.63/sqrt(n)


def test_large_truncation_is_the_standard_normal_in_distribution() -> None:
    z = normal_latents(20000, 1, generator=torch.Generator().manual_seed(2), truncation=1e6)
    assert abs(float(z.mean())) < 0.03 and abs(float(z.std()) - 1) < 0.03


def test_no_truncation_is_plain_randn() -> None:
    z = normal_latents(7, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(z, torch.randn(7, 5, generator=torch.Generator().manual_seed(3)))


@settings(max_examples=25, deadline=None)
@given(bad=st.one_of(st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, True, False, "1", [1.0]]),
                     st.floats(max_value=0.0), st.integers(max_value=0)))
def test_bad_truncation_is_refused_by_name(bad) -> None:
    with pytest.raises(ValueError, match="truncation must be (a finite number|greater than 0|a number)"):
        normal_latents(2, 2, truncation=bad)
    with pytest.raises(ValueError, match="--truncation must be"):
        check_truncation(bad, "--truncation")


def test_check_truncation_accepts_numbers_and_none() -> None:
    assert check_truncation(None) is None
    assert check_truncation(2) == 2.0 and check_truncation(torch.tensor(0.5)) == 0.5
