"""Drawing a reproducible set of samples from any generative model: tensors in, tensors out.

:func:`iter_samples` draws them batch by batch (memory bounded by one batch, whatever ``n``);
:func:`sample_images` collects them into one tensor. Both give the same images for the same ``seed``
and ``batch_size``. ``n`` is at most :data:`MAX_SAMPLES`.

Samples whose pixels hold NaN or +-inf (a model with broken weights, an overflow) would become black
or white uint8 images without a word: every batch counts them (``SampleSet.nonfinite``) and
:func:`sample_images` warns (:class:`NonFiniteSamplesWarning`) when there are any.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import annotated_types as at
import torch

from atelier.config import Seed, check_value
from atelier.data.base import to_uint8
from atelier.models.latents import check_truncation

#: The most samples one call draws (a hard limit: a billion by mistake is refused, not started).
MAX_SAMPLES = 1_000_000


class NonFiniteSamplesWarning(UserWarning):
    """Some samples held NaN or +-inf pixels before conversion to uint8 (they became black or white)."""


@dataclass
class SampleSet:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None  # (N,) int64 for conditional models
    nonfinite: int = 0  # how many of the images held NaN or +-inf pixels (written as 0 or 255)


def check_sample_count(n, name: str = "n") -> int:
    """``n`` as an int in 1..MAX_SAMPLES, else ConfigError (a ValueError) naming ``name``."""
    return check_value(n, Annotated[int, at.Interval(ge=1, le=MAX_SAMPLES)], name)


def nonfinite_message(count: int, n: int) -> str:
    return (f"{count} of {n} samples held NaN or infinite pixel values (written as black or white pixels); "
            f"the model's weights or its computation are broken")


def check_options(model, options: dict) -> dict:
    """The sampling options given (not None) that ``model`` takes (its ``sampling_options``: a flow
    model's steps, sampler, guidance and precision); ValueError naming any it does not."""
    given = {k: v for k, v in options.items() if v is not None}
    takes = tuple(getattr(model, "sampling_options", ()))
    unknown = sorted(set(given) - set(takes))
    if unknown:
        kind = getattr(model, "family", type(model).__name__)
        if takes:
            raise ValueError(f"{', '.join(unknown)}: not a sampling option of a {kind} model (it takes "
                             f"{', '.join(takes)})")
        raise ValueError(f"{', '.join(unknown)} applies to flow models; this is a {kind} model, which samples in "
                         "one pass")
    return given


def iter_samples(
    model, n: int, *, seed: int = 0, label: int | None = None, truncation: float | None = None,
    batch_size: int = 500, **options,
) -> Iterator[SampleSet]:
    """``n`` samples from ``model`` (anything with ``sample(n, labels=, generator=, truncation=)``), in
    batches of ``batch_size``, reproducible from ``seed``. ``label`` fixes the class of a conditional
    model; otherwise the classes cycle 0, 1, ..., K-1 so every class is shown. Every argument is
    checked before the first batch is drawn. ``options``: a flow model's ``steps``, ``sampler`` and
    ``guidance`` (None: the model's default)."""
    n = check_sample_count(n)
    options = check_options(model, options)
    seed = check_value(seed, Seed, "seed")
    truncation = check_truncation(truncation)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    conditional = getattr(model, "conditional", False)
    if label is not None and not conditional:
        raise ValueError("--label needs a class-conditional model; this one is unconditional")
    k = model.config.num_classes if conditional else 0
    if label is not None and not 0 <= label < k:
        raise ValueError(f"labels must lie in 0..{k - 1}, got {label}")
    return _batches(model, n, seed, label, k, truncation, batch_size, options)


def _batches(model, n, seed, label, k, truncation, batch_size, options) -> Iterator[SampleSet]:
    generator = torch.Generator().manual_seed(seed)
    for i in range(0, n, batch_size):
        m = min(batch_size, n - i)
        labels = None
        if k:
            labels = torch.full((m,), label, dtype=torch.long) if label is not None else torch.arange(i, i + m) % k
        floats = model.sample(m, labels=labels, generator=generator, truncation=truncation, **options)
        bad = int((~torch.isfinite(floats.detach())).flatten(1).any(1).sum())
        yield SampleSet(to_uint8(floats), labels, bad)


def sample_images(
    model, n: int, *, seed: int = 0, label: int | None = None, truncation: float | None = None,
    batch_size: int = 500, **options,
) -> SampleSet:
    """All of :func:`iter_samples` in one :class:`SampleSet` (n images in memory: use
    :func:`iter_samples` to stream many). Warns (:class:`NonFiniteSamplesWarning`) when some samples
    held NaN or +-inf."""
    parts = list(iter_samples(model, n, seed=seed, label=label, truncation=truncation, batch_size=batch_size,
                              **options))
    labels = torch.cat([p.labels for p in parts]) if parts[0].labels is not None else None
    nonfinite = sum(p.nonfinite for p in parts)
    if nonfinite:
        warnings.warn(nonfinite_message(nonfinite, n), NonFiniteSamplesWarning, stacklevel=2)
    return SampleSet(torch.cat([p.images for p in parts]), labels, nonfinite)
