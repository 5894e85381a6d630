"""iter_samples: batches in bounded memory, the same images as sample_images, limits checked before drawing,
NaN/inf samples counted and said."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from atelier.models.registry import create_model
from atelier.models.sampling import MAX_SAMPLES, NonFiniteSamplesWarning, iter_samples, sample_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(num_classes: int = 0):
    torch.manual_seed(0)
    return create_model("dcgan", g_width=8, d_width=8, latent_dim=8, num_classes=num_classes)


@pytest.fixture(scope="module")
def cond():
    return tiny(num_classes=10)


class Refuses:
    """A model that fails the test if anything is drawn from it."""

    conditional = False
    config = None

    def sample(self, *args, **kwargs):
        raise AssertionError("a sample was drawn before the arguments were checked")


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 23), batch_size=st.integers(1, 9), seed=st.integers(0, 1000))
def test_batches_concatenate_to_sample_images(cond, n: int, batch_size: int, seed: int) -> None:
    batches = list(iter_samples(cond, n, seed=seed, batch_size=batch_size))
    assert [b.images.shape[0] for b in batches] == [min(batch_size, n - i) for i in range(0, n, batch_size)]
    whole = sample_images(cond, n, seed=seed, batch_size=batch_size)
    assert torch.equal(torch.cat([b.images for b in batches]), whole.images)
    assert torch.cat([b.labels for b in batches]).tolist() == [i % 10 for i in range(n)] == whole.labels.tolist()
    assert all(b.nonfinite == 0 for b in batches) and whole.nonfinite == 0


@settings(max_examples=25, deadline=None)
@given(n=st.one_of(st.integers(max_value=0), st.integers(min_value=MAX_SAMPLES + 1, max_value=10**18)))
def test_counts_beyond_the_limits_are_refused_before_drawing(n: int) -> None:
    with pytest.raises(ValueError, match=r"n must be between 1 and 1,000,000"):
        iter_samples(Refuses(), n)


@pytest.mark.parametrize("bad", [{"truncation": float("nan")}, {"truncation": 0.0}, {"batch_size": 0},
                                 {"label": 3}, {"n": 2.5}, {"n": True}])
def test_bad_arguments_are_refused_before_drawing(bad) -> None:
    kwargs = {"n": 4, **bad}
    with pytest.raises(ValueError):
        iter_samples(Refuses(), **kwargs)


def test_a_label_out_of_range_is_refused_before_drawing(cond) -> None:
    with pytest.raises(ValueError, match="0..9"):
        iter_samples(cond, 3, label=10)


def test_nan_samples_are_counted_and_warned(cond) -> None:
    model = tiny()
    with torch.no_grad():
        next(model.generator_ema.parameters()).view(-1)[0] = float("nan")
    batches = list(iter_samples(model, 5, batch_size=2))
    assert [b.nonfinite for b in batches] == [2, 2, 1]
    with pytest.warns(NonFiniteSamplesWarning, match="5 of 5 samples held NaN"):
        assert sample_images(model, 5).nonfinite == 5
