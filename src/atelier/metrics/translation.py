"""Does an A -> B translation keep the content and reach the target domain? Two fitted judges say.

Unpaired translation has no ground-truth output to compare with, so it is measured on domains whose
images carry labels that the translation must keep (the MNIST-built domains of
:mod:`atelier.data.domains`: the digit survives any change of stroke style):

- the **digit judge** is a digit classifier fitted on labelled real *B* images. It reads a
  translation as a B-domain image and says which digit it shows. Fitting it on B itself (rather than
  applying an MNIST classifier after undoing the style) works for any style, invertible or not, and
  asks the question that matters: would a reader of B-style digits read the output as the digit it
  came from?
- the **domain judge** is a classifier fitted on real A images (in B's channels) against real B
  images. Its probability that a translation is B says whether the style changed.

Either score alone is easy to game: the identity mapping keeps every digit but stays in domain A (the
digit judge, fitted on bold digits, may still read thin ones), and returning a random real B image
reaches the domain with digits at chance. So the headline number is the **success rate**: the
fraction of test images whose translation is read as the right digit *and* judged to be B. Scores of
trivial baselines come with it: identity, a random B image, and histogram matching (the best fixed
per-pixel-value mapping from A's intensities to B's, which solves pointwise styles such as
inversion or a fixed colouring, but cannot make strokes thicker).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from atelier.data import ImageDataset, to_float, to_uint8
from atelier.data.resize import convert_channels
from atelier.metrics.classifier import DigitClassifier, fit_classifier, predict
from atelier.metrics.frechet import FeatureStats, feature_stats, frechet_distance


@dataclass
class TranslationJudges:
    digit: DigitClassifier  # B-domain image -> digit
    domain: DigitClassifier  # B-channel image -> 0: looks like A, 1: looks like B
    channels: int  # B's channel count: every judged image is converted to it
    provenance: dict = field(default_factory=dict)


def _domain_dataset(a: ImageDataset, b: ImageDataset, channels: int, name: str) -> ImageDataset:
    images = torch.cat([convert_channels(a.images, channels), b.images])
    labels = torch.cat([torch.zeros(len(a), dtype=torch.long), torch.ones(len(b), dtype=torch.long)])
    return ImageDataset(images, labels, ["a", "b"], name)


def fit_judges(a_train: ImageDataset, b_train: ImageDataset, a_test: ImageDataset, b_test: ImageDataset, *,
               epochs: int = 3, seed: int = 0, progress: bool = False) -> TranslationJudges:
    """Fit the digit judge on labelled ``b_train`` and the domain judge on ``a_train`` vs ``b_train``;
    their accuracies on ``b_test`` and on ``a_test`` vs ``b_test`` go into the provenance."""
    if b_train.labels is None or b_test.labels is None:
        raise ValueError("the digit judge needs labelled B images (class sub-folders)")
    channels = b_train.channels
    fitted_digit = fit_classifier(b_train, b_test, epochs=epochs, seed=seed, progress=progress)
    domain_train = _domain_dataset(a_train, b_train, channels, "domain-judge:train")
    domain_test = _domain_dataset(a_test, b_test, channels, "domain-judge:test")
    fitted_domain = fit_classifier(domain_train, domain_test, epochs=epochs, seed=seed + 1, progress=progress)
    provenance = {
        "digit_judge": "DigitClassifier fitted on labelled real B training images",
        "digit_judge_test_accuracy": fitted_digit.test_accuracy,
        "digit_judge_sha256": fitted_digit.sha256,
        "domain_judge": "DigitClassifier fitted on real A (class 0) vs real B (class 1) training images",
        "domain_judge_test_accuracy": fitted_domain.test_accuracy,
        "domain_judge_sha256": fitted_domain.sha256,
        "epochs": epochs, "seed": seed, "n_train": [len(a_train), len(b_train)], "n_test": [len(a_test), len(b_test)],
    }
    return TranslationJudges(fitted_digit.model, fitted_domain.model, channels, provenance)


@torch.no_grad()
def judge(judges: TranslationJudges, images: torch.Tensor, labels: torch.Tensor,
          reference: FeatureStats | None = None) -> dict[str, float]:
    """Scores of would-be B images (uint8, or float in [-1, 1]) whose digits should be ``labels``;
    with ``reference`` (see :func:`reference_stats`) also ``fd_to_b``, the Fréchet distance to real B
    images in the digit judge's 128-d feature space (like FID; low = looks like B as a whole)."""
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    images = convert_channels(images, judges.channels)
    correct = predict(judges.digit, images).argmax(1) == labels
    p_b = predict(judges.domain, images).softmax(1)[:, 1]
    scores = {
        "digit_accuracy": float(correct.float().mean()),
        "domain_b_probability": float(p_b.mean()),
        "domain_b_fraction": float((p_b > 0.5).float().mean()),
        "success": float((correct & (p_b > 0.5)).float().mean()),
    }
    if reference is not None:
        scores["fd_to_b"] = frechet_distance(feature_stats(predict(judges.digit, images, features=True)), reference)
    return scores


def reference_stats(judges: TranslationJudges, b_images: torch.Tensor) -> FeatureStats:
    """Digit-judge feature statistics of real B images (uint8), the reference of ``fd_to_b``."""
    return feature_stats(predict(judges.digit, convert_channels(b_images, judges.channels), features=True))


def histogram_matching(a: ImageDataset, b: ImageDataset) -> torch.Tensor:
    """A lookup table (256, C_b) uint8 from A's grey levels to B's per-channel values: each channel is
    the monotone map that matches A's intensity distribution to B's (the value at the same quantile),
    increasing or decreasing: of the directions that send A's commonest level (the background) near
    B's commonest value, the one that keeps the most contrast against it (the strokes stay visible).
    The best fixed pixel-value mapping without pairs: it solves inversion or a fixed colouring, but no
    spatial change such as thicker strokes. A colour A is first turned grey."""
    a_values = convert_channels(a.images, 1).flatten().long()
    counts = torch.bincount(a_values, minlength=256).double()
    cdf_a = (counts.cumsum(0) - counts / 2) / a_values.numel()  # (256,) mid-step: ties map to their middle
    mode_a = int(counts.argmax())
    table = torch.empty(256, b.channels, dtype=torch.uint8)
    for c in range(b.channels):
        b_values = b.images[:, c].flatten()
        b_sorted = b_values.float().sort().values
        mode_b = int(torch.bincount(b_values.long(), minlength=256).argmax())
        candidates = []
        for q in (cdf_a, 1.0 - cdf_a):  # increasing, decreasing
            pos = (q.clamp(0, 1) * (b_sorted.numel() - 1)).round().long()
            candidates.append(b_sorted[pos].round().clamp(0, 255).to(torch.uint8))

        def badness(t: torch.Tensor) -> tuple[bool, float]:
            contrast = float((counts * (t.double() - float(t[mode_a])).abs()).sum())
            return abs(int(t[mode_a]) - mode_b) > 32, -contrast

        table[:, c] = min(candidates, key=badness)
    return table


def apply_table(images: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (N, C_b, H, W) through a (256, C_b) lookup table (grey levels in)."""
    grey = convert_channels(images, 1)[:, 0].long()  # (N, H, W)
    return table[grey].permute(0, 3, 1, 2).contiguous()


def evaluate_translation(translate, judges: TranslationJudges, a_test: ImageDataset, *, b_train: ImageDataset,
                         b_test: ImageDataset | None = None, a_train: ImageDataset | None = None, seed: int = 0,
                         baselines: bool = True) -> dict[str, dict[str, float]]:
    """Judge ``translate`` (float A images in [-1, 1] -> float B images in [-1, 1], e.g.
    ``lambda x: model.translate(x, "a2b")``) on ``a_test``, with the trivial baselines as further rows:
    ``identity`` (the A image itself), ``random_b`` (a random real B training image) and
    ``histogram_matching`` (fitted on ``a_train`` and ``b_train``; skipped without ``a_train``).
    With ``b_test`` every row also gets ``fd_to_b`` against it."""
    labels = a_test.labels
    ref = reference_stats(judges, b_test.images) if b_test is not None else None
    rows = {"translation": judge(judges, translate(to_float(a_test.images)), labels, ref)}
    if baselines:
        rows["identity"] = judge(judges, a_test.images, labels, ref)
        g = torch.Generator().manual_seed(seed)
        pick = torch.randint(len(b_train), (len(a_test),), generator=g)
        rows["random_b"] = judge(judges, b_train.images[pick], labels, ref)
        if a_train is not None:
            table = histogram_matching(a_train, b_train)
            rows["histogram_matching"] = judge(judges, apply_table(a_test.images, table), labels, ref)
    return rows
