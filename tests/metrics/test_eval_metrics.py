"""Distribution metrics on known cases: KID, Inception Score, k-NN manifolds, the two-sample test,
memorisation and the nearest-neighbour search under them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from atelier.metrics.c2st import binomial_sf, classifier_two_sample_test
from atelier.metrics.inception_score import inception_score
from atelier.metrics.kid import kernel_inception_distance, mmd2_unbiased
from atelier.metrics.knn import kth_neighbour_sq_dist, nearest_neighbours
from atelier.metrics.manifold import manifold_metrics
from atelier.metrics.memorisation import nearest_training_images, novelty

MNIST_DIR = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mnist"


def gaussian(n: int, d: int = 16, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


# -- nearest neighbours ------------------------------------------------------------------------
def test_kth_neighbour_matches_brute_force() -> None:
    x = gaussian(300, 8)
    got = kth_neighbour_sq_dist(x, (1, 3, 5), chunk=64)
    d = torch.cdist(x.double(), x.double()) ** 2
    d.fill_diagonal_(float("inf"))
    ordered = d.sort(1).values
    for k in (1, 3, 5):
        torch.testing.assert_close(got[k].double(), ordered[:, k - 1], rtol=1e-4, atol=1e-4)


def test_nearest_neighbours_with_and_without_exclusion() -> None:
    keys, queries = gaussian(500, 8, seed=1), gaussian(70, 8, seed=2)
    dist, idx = nearest_neighbours(queries, keys, chunk=16)
    ref = torch.cdist(queries.double(), keys.double())
    assert torch.equal(idx, ref.argmin(1))
    torch.testing.assert_close(dist.double(), ref.min(1).values, rtol=1e-4, atol=1e-4)
    # Leave-one-out: a key matched against all keys must not find itself.
    pick = torch.tensor([3, 10, 499])
    dist, idx = nearest_neighbours(keys[pick], keys, exclude=pick)
    assert not torch.equal(idx, pick) and (dist > 0).all()
    ref = torch.cdist(keys[pick].double(), keys.double())
    ref[torch.arange(3), pick] = float("inf")
    assert torch.equal(idx, ref.argmin(1))


# -- KID -----------------------------------------------------------------------------------------
def test_mmd_matches_a_naive_double_loop() -> None:
    x, y = gaussian(6, 3, seed=1).double(), gaussian(5, 3, shift=0.5, seed=2).double()
    k = lambda a, b: (float(a @ b) / 3 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / 30
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-9)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_two() -> None:
    a, b = gaussian(2000, seed=1), gaussian(2000, seed=2)
    same_mean, same_std = kernel_inception_distance(a, b, subsets=50, subset_size=500)
    shifted_mean, _ = kernel_inception_distance(a, gaussian(2000, shift=0.3, seed=3), subsets=50, subset_size=500)
    assert abs(same_mean) < 2 * same_std / math.sqrt(50) + 1e-3  # unbiased: zero within its standard error
    assert shifted_mean > 20 * abs(same_mean) and shifted_mean > 10 * same_std / math.sqrt(50)
    # The unbiased estimate does not grow as subsets shrink (a biased one would).
    small_mean, _ = kernel_inception_distance(a, b, subsets=200, subset_size=50)
    assert abs(small_mean) < 0.01


# -- Inception Score -----------------------------------------------------------------------------
def test_inception_score_known_values() -> None:
    k = 10
    confident_even = torch.full((1000, k), -50.0)
    confident_even[torch.arange(1000), torch.arange(1000) % k] = 50.0
    assert inception_score(confident_even)[0] == pytest.approx(k, rel=1e-6)
    one_class = torch.zeros(1000, k)
    one_class[:, 3] = 50.0
    assert inception_score(one_class)[0] == pytest.approx(1.0, abs=1e-6)
    assert inception_score(torch.zeros(500, k))[0] == pytest.approx(1.0, abs=1e-9)  # no confidence
    with pytest.raises(ValueError, match="logits"):
        inception_score(torch.zeros(5, k), splits=10)


# -- precision / recall / density / coverage ------------------------------------------------------
def test_manifold_metrics_identical_disjoint_and_collapsed() -> None:
    real = gaussian(800)
    same = manifold_metrics(real, real.clone())
    assert same.precision == 1.0 and same.recall == 1.0 and same.coverage == 1.0
    assert 0.9 < same.density < 1.6
    far = manifold_metrics(real, gaussian(800, shift=50.0, seed=5))
    assert (far.precision, far.recall, far.density, far.coverage) == (0.0, 0.0, 0.0, 0.0)
    # Mode collapse: samples only near one real point -> high precision, low recall and coverage.
    collapsed = real[0] + 0.01 * gaussian(800, seed=6)
    m = manifold_metrics(real, collapsed)
    assert m.precision > 0.9 and m.recall < 0.05 and m.coverage < 0.05
    # A fresh sample of the same distribution scores high on all four.
    fresh = manifold_metrics(real, gaussian(800, seed=7))
    assert fresh.precision > 0.6 and fresh.recall > 0.6 and fresh.coverage > 0.8 and 0.7 < fresh.density < 1.3


# -- classifier two-sample test --------------------------------------------------------------------
def test_binomial_tail_matches_the_formula() -> None:
    n = 20
    for c in (0, 10, 15, 20):
        expected = sum(math.comb(n, k) for k in range(c, n + 1)) / 2**n
        assert binomial_sf(c, n) == pytest.approx(expected, rel=1e-9)


def test_c2st_separates_different_sets_and_not_one_distribution() -> None:
    different = classifier_two_sample_test(gaussian(1000), gaussian(1000, shift=1.5, seed=1), epochs=5)
    assert different.accuracy > 0.97 and different.p_value < 1e-12
    same = classifier_two_sample_test(gaussian(1000), gaussian(1000, seed=1), epochs=5)
    assert abs(same.accuracy - 0.5) < 0.06 and same.p_value > 1e-3
    assert same.n_train == 1000 and same.n_test == 1000
    with pytest.raises(ValueError, match="differ in size"):
        classifier_two_sample_test(gaussian(10, 4), gaussian(10, 5))


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="needs ../shared/datasets/mnist")
def test_c2st_on_random_mnist_halves_is_at_chance_and_against_noise_is_perfect() -> None:
    from atelier.data import load_dataset

    images = load_dataset("mnist", data_dir=MNIST_DIR, split="test", progress=False).images.float() / 255
    shuffled = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))]
    a, b = shuffled[:4000], shuffled[4000:8000]
    halves = classifier_two_sample_test(a, b, epochs=5)
    assert abs(halves.accuracy - 0.5) < 0.03
    # MNIST's test file is ordered: the first 5,000 digits come from NIST's original training set,
    # the last 5,000 from its test set, and "the first 5000 are cleaner and easier" (LeCun's MNIST
    # page). The test has the power to see that.
    ordered = classifier_two_sample_test(images[:4000], images[6000:10000], epochs=5)
    assert ordered.accuracy > 0.58 and ordered.p_value < 1e-10
    noise = torch.rand(4000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert classifier_two_sample_test(a, noise, epochs=2).accuracy > 0.99


# -- memorisation ----------------------------------------------------------------------------------
def _blobs(n: int, seed: int) -> torch.Tensor:
    """Distinct smooth-ish uint8 images (random low-res patterns upsampled)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(low, size=(16, 16), mode="bilinear") * 255).round().to(torch.uint8)


def test_novelty_flags_exact_and_near_copies_of_training_images() -> None:
    train, heldout, fresh = _blobs(500, 1), _blobs(200, 2), _blobs(90, 3)
    copies = train[[5, 17, 300]]
    nudged = (train[[40, 41]].int() + torch.randint(-2, 3, (2, 1, 16, 16), generator=torch.Generator().manual_seed(0)))
    samples = torch.cat([fresh, copies, nudged.clamp(0, 255).to(torch.uint8)])  # 90 new, 3 copies, 2 near
    result = novelty(samples, train, heldout=heldout, quantile=0.01)
    flagged = result.near_copy.nonzero().flatten().tolist()
    assert set(range(90, 95)) <= set(flagged)
    assert result.distances[90:93].max() == 0 and result.indices[90:93].tolist() == [5, 17, 300]
    assert result.indices[93:95].tolist() == [40, 41]
    assert len(flagged) <= 5 + 5  # fresh samples are flagged about as often as held-out ones (1%)
    assert result.near_copy_fraction == pytest.approx(len(flagged) / 95)
    assert result.memorisation_ratio == pytest.approx(result.near_copy_fraction / 0.01)
    assert result.closest(3).tolist() == sorted(result.closest(3).tolist(), key=lambda i: result.distances[i])


def test_novelty_leave_one_out_calibration_and_fixed_threshold() -> None:
    train = _blobs(400, 1)
    loo = novelty(_blobs(50, 9), train)  # no held-out set: training images matched to the others
    assert loo.quantile == 0.01 and loo.threshold > 0 and loo.heldout_distances is not None
    fixed = novelty(train[:10], train, threshold=0.0)
    assert fixed.near_copy_fraction == 1.0 and fixed.memorisation_ratio is None
    rms, _ = nearest_training_images(torch.full((1, 1, 16, 16), 255, dtype=torch.uint8),
                                     torch.zeros(1, 1, 16, 16, dtype=torch.uint8))
    assert rms.item() == pytest.approx(1.0)  # black vs white: RMS distance 1 on the 0..1 scale
    with pytest.raises(ValueError, match="differ in shape"):
        novelty(_blobs(3, 1)[:, :, :8], train, threshold=0.1)


# -- agreement with torchmetrics ------------------------------------------------------------------
class _Identity(torch.nn.Module):
    """Lets torchmetrics' FID/KID run on given feature vectors (its images are (N, D, 1, 1))."""

    num_features = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance`")
def test_fid_and_kid_agree_with_torchmetrics() -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    from atelier.metrics import feature_stats, frechet_distance

    a, b = gaussian(1500), gaussian(1500, shift=0.3, seed=1) * 1.2
    tm_fid = FrechetInceptionDistance(feature=_Identity())
    tm_kid = KernelInceptionDistance(feature=_Identity(), subsets=1, subset_size=1500)
    for metric in (tm_fid, tm_kid):
        metric.update(a.view(-1, 16, 1, 1), real=True)
        metric.update(b.view(-1, 16, 1, 1), real=False)
    assert frechet_distance(feature_stats(a), feature_stats(b)) == pytest.approx(float(tm_fid.compute()), rel=1e-5)
    kid_mean, _ = tm_kid.compute()
    assert mmd2_unbiased(a, b) == pytest.approx(float(kid_mean), rel=1e-4)
