"""Reconstruction metrics (MSE, PSNR, SSIM) against values known in closed form and a naive SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch


from atelier.data.base import to_float  # noqa: E402
from atelier.metrics.reconstruction import reconstruction_metrics  # noqa: E402


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_constant_offset_gives_known_mse_and_psnr() -> None:
    x = 0.2 + 0.6 * _rand(4, 3, 16, 16)
    m = reconstruction_metrics(x, x + 0.1, data_range=1.0)
    assert m.n == 4
    assert m.mse == pytest.approx(0.01, abs=1e-4)
    assert m.psnr == pytest.approx(20.0, abs=1e-4)
    assert m.psnr_of_mean_mse == pytest.approx(20.0, abs=1e-4)
    torch.testing.assert_close(m.per_image["mse"], torch.full((4,), 0.01, dtype=torch.float64))
    torch.testing.assert_close(m.per_image["psnr"], torch.full((4,), 20.0, dtype=torch.float64))
    assert set(m.to_dict()) == {"mse", "psnr", "psnr_of_mean_mse", "ssim", "n"}
    assert all(isinstance(v, (float, int)) for v in m.to_dict().values())


def test_mean_psnr_is_over_images_not_of_mean_mse() -> None:
    x = 0.2 + 0.6 * _rand(2, 1, 8, 8)
    y = x.clone()
    y[0] += 0.1  # MSE 0.01 -> 20 dB
    y[1] += 0.01  # MSE 0.0001 -> 40 dB
    m = reconstruction_metrics(x, y, data_range=1.0)
    # torchmetrics converts to dB with a float32 constant (10 / ln 10): ~1e-7 relative error
    assert m.psnr == pytest.approx(30.0, abs=1e-5)
    assert m.psnr_of_mean_mse == pytest.approx(-10 * math.log10((0.01 + 0.0001) / 2), abs=1e-9)


def test_identical_images() -> None:
    x = _rand(3, 3, 12, 12)
    m = reconstruction_metrics(x, x.clone(), data_range=1.0)
    assert m.ssim == pytest.approx(1.0, abs=1e-12)
    assert m.mse == 0.0
    assert torch.isinf(m.per_image["psnr"]).all()  # kept infinite per image ...
    assert m.psnr == 100.0 and m.psnr_of_mean_mse == 100.0  # ... capped in the means
    assert reconstruction_metrics(x, x, data_range=1.0, max_psnr=None).psnr == math.inf
    # one identical pair among others: the mean stays finite
    y = x.clone()
    y[1:] += 0.01
    assert math.isfinite(reconstruction_metrics(x, y, data_range=1.0).psnr)


def test_ssim_of_constant_images_matches_closed_form() -> None:
    a, b = 0.3, 0.5
    x, y = torch.full((1, 1, 32, 32), a), torch.full((1, 1, 32, 32), b)
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert reconstruction_metrics(x, y, data_range=1.0).ssim == pytest.approx(expected, abs=1e-6)


def _naive_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """Wang et al. SSIM, one window at a time: 11x11 Gaussian (sigma 1.5), K1 0.01, K2 0.03.

    Borders as torchmetrics does them: pad 5 pixels by reflection (no edge repeat), so there is one
    window per pixel, and average the SSIM map over the whole image.
    """
    r, s = 5, 1.5
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(t**2) / (2 * s * s))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    xp, yp = np.pad(x, r, mode="reflect"), np.pad(y, r, mode="reflect")
    values = []
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            a, b = xp[i : i + 2 * r + 1, j : j + 2 * r + 1], yp[i : i + 2 * r + 1, j : j + 2 * r + 1]
            mx, my = (w * a).sum(), (w * b).sum()
            vx, vy = (w * (a - mx) ** 2).sum(), (w * (b - my) ** 2).sum()
            cxy = (w * (a - mx) * (b - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_matches_a_naive_implementation() -> None:
    x = _rand(1, 1, 24, 24, seed=1)
    y = (0.7 * x + 0.3 * _rand(1, 1, 24, 24, seed=2)).clamp(0, 1)
    expected = _naive_ssim(x[0, 0].numpy(), y[0, 0].numpy())
    m = reconstruction_metrics(x, y, data_range=1.0)
    assert m.ssim == pytest.approx(expected, abs=1e-4)
    assert 0.1 < expected < 0.99  # a case that actually tests something


def test_uint8_and_float_inputs_agree() -> None:
    g = torch.Generator().manual_seed(3)
    u = torch.randint(0, 256, (5, 3, 20, 20), generator=g, dtype=torch.uint8)
    v = (u.int() + torch.randint(-20, 21, u.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    from_uint8 = reconstruction_metrics(u, v)
    from_unit = reconstruction_metrics(u.double() / 255, v.double() / 255, data_range=1.0)
    from_tanh = reconstruction_metrics(to_float(u), to_float(v))  # float32 in [-1, 1], the default
    from_pair = reconstruction_metrics(u.double(), v.double(), data_range=(0, 255))
    for other, tol in ((from_unit, 1e-12), (from_pair, 1e-12), (from_tanh, 1e-5)):
        for key in ("mse", "psnr", "ssim"):
            torch.testing.assert_close(other.per_image[key], from_uint8.per_image[key], rtol=tol, atol=tol)


def test_batching_does_not_change_the_result() -> None:
    x, y = _rand(7, 1, 10, 10, seed=4), _rand(7, 1, 10, 10, seed=5)
    a = reconstruction_metrics(x, y, data_range=1.0, batch_size=3)
    b = reconstruction_metrics(x, y, data_range=1.0)
    for key in ("mse", "psnr", "ssim"):
        torch.testing.assert_close(a.per_image[key], b.per_image[key])
    assert a.to_dict() == pytest.approx(b.to_dict())


def test_a_noisier_reconstruction_scores_worse_everywhere() -> None:
    x = _rand(6, 3, 32, 32, seed=6)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    slight = reconstruction_metrics(x, (x + 0.03 * noise).clamp(0, 1), data_range=1.0)
    heavy = reconstruction_metrics(x, (x + 0.15 * noise).clamp(0, 1), data_range=1.0)
    assert heavy.mse > slight.mse
    assert heavy.psnr < slight.psnr
    assert heavy.ssim < slight.ssim


def test_errors() -> None:
    x = _rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"\(2, 1, 16, 16\).*\(2, 1, 16, 12\)"):
        reconstruction_metrics(x, x[..., :12], data_range=1.0)
    with pytest.raises(ValueError, match="4-D"):
        reconstruction_metrics(x[0], x[0], data_range=1.0)
    with pytest.raises(ValueError, match="empty"):
        reconstruction_metrics(x[:0], x[:0], data_range=1.0)
    bad = x.clone()
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        reconstruction_metrics(x, bad, data_range=1.0)
    with pytest.raises(ValueError, match="at least 6x6"):
        reconstruction_metrics(x[..., :5, :5], x[..., :5, :5], data_range=1.0)
    with pytest.raises(ValueError, match="data_range"):  # uint8 against float: say which scale
        reconstruction_metrics((x * 255).to(torch.uint8), x)
    with pytest.raises(ValueError, match="far outside"):  # [0, 255] floats with the [-1, 1] default
        reconstruction_metrics(x * 255, x * 255)
    with pytest.raises(ValueError, match="data_range"):
        reconstruction_metrics(x, x, data_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="batch_size"):
        reconstruction_metrics(x, x, data_range=1.0, batch_size=0)
