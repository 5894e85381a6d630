"""The Fréchet distance and the domain classifier used to measure sample quality."""

from __future__ import annotations

import math

import pytest
import torch

from atelier.data import load_dataset
from atelier.metrics import feature_stats, frechet_distance
from atelier.metrics.classifier import (
    DigitClassifier,
    accuracy,
    fit_classifier,
    load_classifier,
    predict,
    save_classifier,
)
from atelier.metrics.frechet import FeatureStats

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_frechet_of_a_set_with_itself_is_zero() -> None:
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    s = feature_stats(x)
    assert abs(frechet_distance(s, s)) < 1e-8


def test_frechet_matches_the_closed_form_for_gaussians() -> None:
    # Diagonal covariances commute: d^2 = |mu1 - mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.5])
    v1, v2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    a = FeatureStats(mu1.double(), torch.diag(v1).double(), 1000)
    b = FeatureStats(mu2.double(), torch.diag(v2).double(), 1000)
    expected = float(((mu1 - mu2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum())
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    # and a full (non-diagonal) case against the general formula with a matrix square root
    g = torch.Generator().manual_seed(1)
    m1, m2 = torch.randn(4, 4, generator=g, dtype=torch.float64), torch.randn(4, 4, generator=g, dtype=torch.float64)
    s1, s2 = m1 @ m1.T + 0.1 * torch.eye(4, dtype=torch.float64), m2 @ m2.T + 0.1 * torch.eye(4, dtype=torch.float64)
    w, v = torch.linalg.eig(s1 @ s2)
    trace_sqrt = w.sqrt().real.sum()
    general = float(s1.trace() + s2.trace() - 2 * trace_sqrt)
    zero = torch.zeros(4, dtype=torch.float64)
    assert frechet_distance(FeatureStats(zero, s1, 10), FeatureStats(zero, s2, 10)) == pytest.approx(general, rel=1e-6)


def test_frechet_grows_with_the_shift_between_samples() -> None:
    g = torch.Generator().manual_seed(2)
    base = feature_stats(torch.randn(2000, 8, generator=g))
    near = feature_stats(torch.randn(2000, 8, generator=g) + 0.1)
    far = feature_stats(torch.randn(2000, 8, generator=g) + 1.0)
    assert frechet_distance(base, near) < frechet_distance(base, far)
    assert frechet_distance(base, far) == pytest.approx(8.0, rel=0.1)  # |shift|^2 = 8 x 1^2


def test_feature_stats_rejects_too_few_samples() -> None:
    with pytest.raises(ValueError, match="N >= 2"):
        feature_stats(torch.zeros(1, 4))


def test_classifier_shapes_and_resizing() -> None:
    model = DigitClassifier().eval()
    for size in (28, 32, 64):
        x = torch.rand(3, 1, size, size) * 2 - 1
        assert model(x).shape == (3, 10)
        assert model.features(x).shape == (3, 128)


def test_classifier_learns_digits_and_round_trips_through_the_cache(atelier_home) -> None:
    train = load_dataset("digits", resolution=28, split="train", progress=False)
    test = load_dataset("digits", resolution=28, split="test", progress=False)
    untrained = DigitClassifier()
    chance = accuracy(untrained, test)
    fitted = fit_classifier(train, test, epochs=3, batch_size=64, lr=3e-3, progress=False)
    assert fitted.test_accuracy > 0.85 > chance + 0.3
    assert math.isclose(fitted.test_accuracy, accuracy(fitted.model, test))
    assert load_classifier("digits-test") is None
    path = save_classifier(fitted, "digits-test")
    assert path.is_file() and str(path).startswith(str(atelier_home))
    loaded = load_classifier("digits-test")
    assert loaded is not None and loaded.sha256 == fitted.sha256
    assert torch.equal(predict(loaded.model, test.images[:50]), predict(fitted.model, test.images[:50]))
