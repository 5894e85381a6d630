"""Membership inference: does a trained model give away which images it was trained on?

An attacker holding an image asks the model about it and guesses "member" (a training image) when the
answer looks like the answers training images get. Each attack gives every image a score, higher
meaning "more likely a member":

- ``discriminator`` (a GAN; Hayes et al. 2019, LOGAN): the discriminator's logit, with the image's label
  when the model is class-conditional. Only a GAN's generator is averaged (EMA), so this is the trained
  discriminator, in eval mode (batch norm uses its running statistics: a score does not depend on the
  other images of its batch).
- ``elbo`` (a VAE; Hilprecht et al. 2019): the ELBO of the image averaged over ``elbo_samples`` posterior
  draws from a fixed seed, with the averaged (EMA) networks that sampling and the test likelihood use.
- ``distance`` (any model that samples; Chen et al. 2020, GAN-Leaks): minus the pixel distance from the
  image to the nearest of the model's samples; *calibrated* when real images the model never saw are
  given as a reference, by adding the image's distance to the nearest of those, so images in dense
  parts of the data are not taken for members merely because everything lies near them.

``attack="auto"`` takes the first that fits the model (in that order) and the result says which.

From the scores of members and non-members (held-out images of the same data) come the ROC AUC, the
membership advantage of Yeom et al. (2018), max over thresholds of TPR - FPR, and the TPR at 1% FPR
(Carlini et al. 2022), each with a stratified bootstrap interval. The advantage is cross-fitted: its
maximum over thresholds taken on the very scores it is measured on is >= 0 by construction and about
1/sqrt(n) for a model that leaks nothing (it is the Kolmogorov-Smirnov statistic, kept as
``advantage_in_sample``), so the threshold is chosen on one half of the images and TPR - FPR measured
on the other (then the halves swap). That estimate is 0 on average for a model that leaks nothing, and
its interval covers 0 then. ROC and AUC are torchmetrics'; the scores enter as ranks scaled to [0, 1]
because torchmetrics takes values outside [0, 1] for logits and squashes them with a sigmoid, which
saturates (an ELBO of -300 and one of -200 would tie at 0).

:func:`audit_data` runs one attack and the near-copy check (:func:`~atelier.metrics.memorisation.novelty`)
and says in a line whether the model gives its training images away; :func:`load_audit_data` reads a
run's training and held-out images from its saved data config. This file runs past ~400 lines because
the attacks, their statistics and the audit share helpers and are read together.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from atelier.data.base import DataError, ImageDataset, Message, Option, to_float
from atelier.metrics.memorisation import nearest_training_images, novelty
from atelier.signals import ShouldStop, check_stop

ATTACKS = ("auto", "discriminator", "elbo", "distance")
#: A near-copy share this many times the expected one (and unlikely by chance) is a warning.
COPY_RATIO_WARNING = 3.0
#: Images per side an audit scores at most, and samples it draws at most.
MAX_AUDIT_N = 100_000
MAX_AUDIT_SAMPLES = 200_000
#: Bootstrap resamples at most (each is one ROC of 2n scores: ~1 ms at n = 1000) and posterior draws per image.
MAX_BOOTSTRAP = 10_000
MAX_ELBO_SAMPLES = 256


# -- the attacks -------------------------------------------------------------------------------------
def _capabilities(model: Any) -> dict[str, bool]:
    return {"discriminator": isinstance(getattr(model, "discriminator", None), nn.Module),
            "elbo": hasattr(model, "kl_term") and hasattr(getattr(model, "config", None), "likelihood"),
            "distance": "sample" in getattr(model, "tasks", ())}


def choose_attack(model: Any, attack: str = "auto", *, labelled: bool = True) -> tuple[str, str]:
    """(attack, why it was taken) for ``model``; ``labelled``: the images come with their labels."""
    can = _capabilities(model)
    family = getattr(model, "family", type(model).__name__)
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose from {', '.join(ATTACKS)}")
    if not can["distance"]:
        raise ValueError(f"a membership audit needs a model that generates images (a GAN, a VAE, ...); this is "
                         f"a {family} model")
    needs_labels = bool(getattr(model, "conditional", False)) and not labelled
    if attack == "auto":
        for name in ("discriminator", "elbo"):
            if can[name] and not needs_labels:
                return name, f"auto: the model has {'a discriminator' if name == 'discriminator' else 'a likelihood'}"
        if needs_labels:
            return "distance", "auto: the model is class-conditional and the images have no labels"
        return "distance", f"auto: the {family} model has neither a discriminator nor a likelihood"
    if not can[attack]:
        needs = "a discriminator (a GAN)" if attack == "discriminator" else "a likelihood (a VAE)"
        raise ValueError(f"the {attack} attack needs a model with {needs}; this is a {family} model")
    if needs_labels and attack != "distance":
        raise ValueError(f"the model is class-conditional: the {attack} attack needs the images' labels "
                         "(member_labels and nonmember_labels), or use the distance attack")
    return attack, "as asked"


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


@torch.no_grad()
def discriminator_scores(model: Any, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                         batch_size: int = 256, should_stop: ShouldStop | None = None) -> torch.Tensor:
    """(N,) discriminator logits of uint8 ``images`` (with ``labels`` for a conditional GAN)."""
    net = model.discriminator
    conditional = bool(getattr(model, "conditional", False))
    if conditional and labels is None:
        raise ValueError("the GAN is class-conditional: its discriminator needs the images' labels")
    device, out = _device(net), []
    with _eval_mode(net):
        for i in range(0, images.shape[0], batch_size):
            check_stop(should_stop, "while scoring images with the discriminator")
            lab = labels[i : i + batch_size].long().to(device) if conditional else None
            out.append(net(to_float(images[i : i + batch_size]).to(device), lab).float().flatten().cpu())
    return torch.cat(out)


@torch.no_grad()
def elbo_scores(model: Any, images: torch.Tensor, labels: torch.Tensor | None = None, *, samples: int = 8,
                seed: int = 0, batch_size: int = 256, should_stop: ShouldStop | None = None) -> torch.Tensor:
    """(N,) ELBO in nats of uint8 ``images``, averaged over ``samples`` posterior draws from ``seed``
    (and, for a binarising VAE, over as many binarisations), with the averaged networks."""
    from atelier.objectives.vae import elbo_terms, targets

    if not 1 <= samples <= MAX_ELBO_SAMPLES:
        raise ValueError(f"elbo_samples must lie in 1..{MAX_ELBO_SAMPLES}, got {samples}")
    conditional = bool(getattr(model, "conditional", False))
    if conditional and labels is None:
        raise ValueError("the VAE is class-conditional: its likelihood needs the images' labels")
    cfg, g, out = model.config, torch.Generator().manual_seed(seed), []
    averaged = model.averaged() if hasattr(model, "averaged") else contextlib.nullcontext()
    with averaged, _eval_mode(model):
        device = _device(model)
        for i in range(0, images.shape[0], batch_size):
            check_stop(should_stop, "while scoring images with the VAE's likelihood")
            x = to_float(images[i : i + batch_size]).to(device)
            lab = labels[i : i + batch_size].long().to(device) if conditional else None
            total = torch.zeros(x.shape[0], dtype=torch.float64)
            for _ in range(samples):
                target = targets(x, cfg.likelihood, binarize=getattr(cfg, "binarize", False), generator=g)
                total += elbo_terms(model, x, lab, target=target, generator=g)["elbo"].double().cpu()
            out.append((total / samples).float())
    return torch.cat(out)


def distance_scores(images: torch.Tensor, generated: torch.Tensor,
                    reference: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) minus the RMS pixel distance of each uint8 image to its nearest generated sample; plus its
    distance to the nearest ``reference`` image (real, seen by neither the model nor the attack) when given."""
    score = -nearest_training_images(images, generated)[0]
    if reference is not None:
        score += nearest_training_images(images, reference)[0]
    return score


# -- the statistics ----------------------------------------------------------------------------------
@dataclass
class MembershipResult:
    """How well scores tell members from non-members; intervals are bootstrap percentile intervals."""

    auc: float
    auc_ci: tuple[float, float]
    advantage: float  # cross-fitted max over thresholds of TPR - FPR: ~0 when nothing leaks
    advantage_ci: tuple[float, float]
    advantage_in_sample: float  # the same maximum on the scores it was picked on (>= 0, ~1/sqrt(n) by chance)
    tpr_at_low_fpr: float
    tpr_at_low_fpr_ci: tuple[float, float]
    low_fpr: float
    n_members: int
    n_nonmembers: int
    bootstrap: int
    confidence: float
    seed: int
    attack: str = "scores"
    how: str = ""  # what the attack computed, in words
    member_scores: torch.Tensor = field(default_factory=lambda: torch.empty(0), repr=False)
    nonmember_scores: torch.Tensor = field(default_factory=lambda: torch.empty(0), repr=False)

    @property
    def leaks(self) -> bool:
        """Evidence that members are told apart: the advantage's interval or the AUC's lies above chance
        (each a one-sided test at (1 - confidence) / 2; never without intervals, ``bootstrap=0``)."""
        return self.bootstrap > 0 and (self.advantage_ci[0] > 0.0 or self.auc_ci[0] > 0.5)

    def summary(self) -> dict:
        return {"attack": self.attack, "how": self.how, "auc": self.auc, "auc_ci": list(self.auc_ci),
                "advantage": self.advantage, "advantage_ci": list(self.advantage_ci),
                "advantage_in_sample": self.advantage_in_sample, "tpr_at_low_fpr": self.tpr_at_low_fpr,
                "tpr_at_low_fpr_ci": list(self.tpr_at_low_fpr_ci), "low_fpr": self.low_fpr,
                "n_members": self.n_members, "n_nonmembers": self.n_nonmembers, "bootstrap": self.bootstrap,
                "confidence": self.confidence, "seed": self.seed,
                "member_score_mean": float(self.member_scores.mean()) if self.member_scores.numel() else None,
                "nonmember_score_mean": float(self.nonmember_scores.mean()) if self.nonmember_scores.numel() else None}


def _scores(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().flatten().double().cpu()
    if t.numel() < 2:
        raise ValueError(f"{name}: need at least 2 scores, got {t.numel()}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: the scores hold NaN or infinite values")
    return t


def _unit_ranks(x: torch.Tensor) -> torch.Tensor:
    """Scores -> their dense ranks scaled to [0, 1]: the order and the ties kept, nothing squashed."""
    values, inverse = torch.unique(x, sorted=True, return_inverse=True)
    return inverse.double() / max(values.numel() - 1, 1)


def _roc(pm: torch.Tensor, pf: torch.Tensor):
    from torchmetrics.functional.classification import binary_roc

    preds = torch.cat([pm, pf])
    target = torch.cat([torch.ones(pm.numel()), torch.zeros(pf.numel())]).long()
    return preds, target, binary_roc(preds, target, validate_args=False)


def _curve(pm: torch.Tensor, pf: torch.Tensor, low_fpr: float) -> tuple[float, float, float]:
    """(AUC, TPR at FPR <= ``low_fpr``, max TPR - FPR) of member / non-member unit scores."""
    from torchmetrics.functional.classification import binary_auroc

    preds, target, (fpr, tpr, _) = _roc(pm, pf)
    auc = min(1.0, max(0.0, float(binary_auroc(preds, target, validate_args=False))))  # float32 round-off
    return auc, float(tpr[fpr <= low_fpr + 1e-12].max()), float((tpr - fpr).max())


def _best_threshold(sm: torch.Tensor, sf: torch.Tensor) -> float:
    """A raw-score threshold (member at score >= it) with the largest TPR - FPR on these scores: the middle
    of the gap between the two scores that bound the best cut, so it carries over to new images."""
    both = torch.cat([sm, sf])
    values, unit = torch.unique(both, sorted=True), _unit_ranks(both)
    _, _, (fpr, tpr, thresholds) = _roc(unit[: sm.numel()], unit[sm.numel() :])
    best = int((tpr - fpr).argmax())
    if best == 0:  # torchmetrics' first point: nothing called a member
        return math.inf
    if best == len(thresholds) - 1:  # everything called a member
        return -math.inf
    index = (thresholds * max(values.numel() - 1, 1)).round().long()  # unit rank -> index into values
    return float((values[index[best]] + values[index[best + 1]]) / 2)


def _cross_fitted(m: torch.Tensor, f: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per member: called a member (1/0) by a threshold picked on the other half; the same per non-member."""
    hits, alarms = torch.empty(m.numel(), dtype=torch.float64), torch.empty(f.numel(), dtype=torch.float64)
    om, of = torch.randperm(m.numel(), generator=g), torch.randperm(f.numel(), generator=g)
    halves_m, halves_f = (om[: m.numel() // 2], om[m.numel() // 2 :]), (of[: f.numel() // 2], of[f.numel() // 2 :])
    for k in (0, 1):
        t = _best_threshold(m[halves_m[1 - k]], f[halves_f[1 - k]])
        hits[halves_m[k]] = (m[halves_m[k]] >= t).double()
        alarms[halves_f[k]] = (f[halves_f[k]] >= t).double()
    return hits, alarms


def membership_advantage(member_scores: Any, nonmember_scores: Any, *, low_fpr: float = 0.01,
                         bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0, attack: str = "scores",
                         how: str = "") -> MembershipResult:
    """AUC, cross-fitted advantage and TPR at ``low_fpr`` for scores where higher means "member", with
    ``bootstrap`` stratified resamples (0: no intervals) giving ``confidence`` percentile intervals."""
    m, f = _scores(member_scores, "member_scores"), _scores(nonmember_scores, "nonmember_scores")
    if not 0.0 < low_fpr < 1.0 or not 0.0 < confidence < 1.0:
        raise ValueError(f"low_fpr and confidence must lie in (0, 1), got {low_fpr} and {confidence}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or not 0 <= bootstrap <= MAX_BOOTSTRAP:
        raise ValueError(f"bootstrap must be a whole number of resamples in 0..{MAX_BOOTSTRAP}, got {bootstrap!r}")
    unit = _unit_ranks(torch.cat([m, f]))
    pm, pf = unit[: m.numel()], unit[m.numel() :]
    auc, tpr_low, in_sample = _curve(pm, pf, low_fpr)
    g = torch.Generator().manual_seed(seed)
    hits, alarms = _cross_fitted(m, f, g)
    advantage = float(hits.mean() - alarms.mean())
    draws = []
    for _ in range(bootstrap):
        im = torch.randint(m.numel(), (m.numel(),), generator=g)
        i_f = torch.randint(f.numel(), (f.numel(),), generator=g)
        draws.append((*_curve(pm[im], pf[i_f], low_fpr)[:2], float(hits[im].mean() - alarms[i_f].mean())))

    def interval(column: int, point: float) -> tuple[float, float]:
        if not draws:
            return point, point
        values = torch.tensor([d[column] for d in draws], dtype=torch.float64)
        tail = (1.0 - confidence) / 2
        return float(torch.quantile(values, tail)), float(torch.quantile(values, 1.0 - tail))

    return MembershipResult(auc, interval(0, auc), advantage, interval(2, advantage), in_sample, tpr_low,
                            interval(1, tpr_low), low_fpr, m.numel(), f.numel(), bootstrap, confidence, seed,
                            attack, how, m.float(), f.float())


# -- the audit ---------------------------------------------------------------------------------------
@dataclass
class AuditReport:
    """A model's memorisation audit: near-copies among its samples and a membership-inference attack."""

    membership: MembershipResult
    near_copy_fraction: float
    memorisation_ratio: float | None
    near_copy_p_value: float  # chance of this many near-copies or more from a model that copies nothing
    near_copy_threshold: float
    n_samples: int
    n_members_available: int
    n_nonmembers_available: int
    overlap_removed: int  # held-out images byte-identical to a training image, left out
    notes: list[str]
    provenance: dict

    @property
    def leaks(self) -> bool:
        return self.membership.leaks

    @property
    def copies(self) -> bool:
        r = self.memorisation_ratio
        return r is not None and r >= COPY_RATIO_WARNING and self.near_copy_p_value < 0.01

    @property
    def verdict(self) -> str:
        ms = self.membership
        pct = 100 * ms.confidence
        said = (f"advantage {ms.advantage:.3f} [{ms.advantage_ci[0]:.3f}, {ms.advantage_ci[1]:.3f}], "
                f"AUC {ms.auc:.3f} [{ms.auc_ci[0]:.3f}, {ms.auc_ci[1]:.3f}] ({pct:.0f}% intervals, {ms.attack} attack)")
        warnings = []
        if self.leaks:
            warnings.append(f"the model gives away its training images: the {ms.attack} attack tells them from "
                            f"held-out ones better than chance ({said})")
        if self.copies:
            warnings.append(f"{100 * self.near_copy_fraction:.1f}% of its samples are near-copies of training "
                            f"images, {self.memorisation_ratio:.1f}x the share expected of new images")
        if warnings:
            return "WARNING: " + "; and ".join(warnings)
        if not ms.bootstrap:
            return f"{said}: no intervals (bootstrap=0), so no verdict on membership inference"
        return (f"{said}: no evidence the model gives away its training images (with {ms.n_members} images a "
                "side; not a proof that it cannot)")

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "leaks": self.leaks, "copies": self.copies,
                "membership": self.membership.summary(),
                "near_copy_fraction": self.near_copy_fraction, "memorisation_ratio": self.memorisation_ratio,
                "near_copy_p_value": self.near_copy_p_value, "near_copy_threshold": self.near_copy_threshold,
                "n_samples": self.n_samples, "n_members_available": self.n_members_available,
                "n_nonmembers_available": self.n_nonmembers_available, "overlap_removed": self.overlap_removed,
                "notes": self.notes, "provenance": self.provenance}

    def table(self) -> str:
        ms, lo_hi = self.membership, lambda ci: f"[{ci[0]:.3f}, {ci[1]:.3f}]"
        ratio = f"{self.memorisation_ratio:.2f}" if self.memorisation_ratio is not None else "-"
        rows = [
            ("attack", f"{ms.attack}: {ms.how}"),
            ("images a side", f"{ms.n_members} training vs {ms.n_nonmembers} held-out (of {self.n_members_available} "
                              f"and {self.n_nonmembers_available})"),
            ("AUC", f"{ms.auc:.3f} {lo_hi(ms.auc_ci)}   (0.5 = chance)"),
            ("advantage", f"{ms.advantage:.3f} {lo_hi(ms.advantage_ci)}   (TPR - FPR, 0 = chance; in-sample max "
                          f"{ms.advantage_in_sample:.3f})"),
            (f"TPR at {100 * ms.low_fpr:g}% FPR", f"{ms.tpr_at_low_fpr:.3f} {lo_hi(ms.tpr_at_low_fpr_ci)}   "
                                                 f"({ms.low_fpr:g} = chance)"),
            ("near-copies", f"{100 * self.near_copy_fraction:.2f}% of {self.n_samples} samples, ratio {ratio} "
                            f"(1 = chance, p = {self.near_copy_p_value:.2g})"),
        ]
        lines = [f"membership audit ({100 * ms.confidence:.0f}% bootstrap intervals, {ms.bootstrap} resamples)"]
        lines += [f"  {k:18s} {v}" for k, v in rows]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines + [self.verdict])


def _digests(images: torch.Tensor) -> list[bytes]:
    rows = images.flatten(1).contiguous().numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]


def _check_images(images: Any, model: Any, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a uint8 tensor of images (N, C, H, W), got {got}")
    cfg = getattr(model, "config", None)
    want = (getattr(cfg, "channels", images.shape[1]), *2 * [getattr(cfg, "resolution", images.shape[-1])])
    if tuple(images.shape[1:]) != want:
        raise ValueError(f"{name} are {tuple(images.shape[1:])} (C, H, W) but the model makes {want}: load them at "
                         f"the model's resolution and channels")
    return images


def _binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space."""
    if k <= 0:
        return 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
            + (n - i) * math.log1p(-p) for i in range(k, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def audit_data(pipe_or_model: Any, members: torch.Tensor, nonmembers: torch.Tensor, *,
               member_labels: torch.Tensor | None = None, nonmember_labels: torch.Tensor | None = None,
               n: int = 1000, n_samples: int = 2000, attack: str = "auto", seed: int = 0, bootstrap: int = 1000,
               confidence: float = 0.95, low_fpr: float = 0.01, copy_quantile: float = 0.01, elbo_samples: int = 8,
               batch_size: int = 256, also_seen: torch.Tensor | None = None, notes: list[str] | None = None,
               sources: dict | None = None, should_stop: ShouldStop | None = None) -> AuditReport:
    """Audit a model (a :class:`~atelier.pipelines.Pipeline` or the model itself) for memorisation.

    ``members``: the uint8 (N, C, H, W) images it was trained on; ``nonmembers``: images of the same data it
    never saw. Held-out images byte-identical to a training image, or to one of ``also_seen`` (images the
    model saw besides its members, such as the data a fine-tuned model was pre-trained on), are left out
    and counted. Then ``n`` of each side (fewer if either has fewer), drawn with ``seed``, are scored by
    ``attack``. ``n_samples`` samples (from ``seed``) give the near-copy share against every member, its
    threshold calibrated on the non-members at ``copy_quantile``. ``notes`` and ``sources`` are recorded in
    the report as given.
    """
    model = getattr(pipe_or_model, "model", pipe_or_model)
    members = _check_images(members, model, "members")
    nonmembers = _check_images(nonmembers, model, "nonmembers")
    also_seen = _check_images(also_seen, model, "also_seen") if also_seen is not None else None
    for labels, images, name in ((member_labels, members, "member_labels"),
                                 (nonmember_labels, nonmembers, "nonmember_labels")):
        if labels is not None and tuple(labels.shape) != (images.shape[0],):
            raise ValueError(f"{name} must hold one label per image ({images.shape[0]}), got shape "
                             f"{tuple(labels.shape)}")
    notes = list(notes or [])
    member_set = set(_digests(members)) | (set(_digests(also_seen)) if also_seen is not None else set())
    keep = torch.tensor([d not in member_set for d in _digests(nonmembers)], dtype=torch.bool)
    overlap = int((~keep).sum())
    if overlap:
        nonmembers = nonmembers[keep]
        nonmember_labels = nonmember_labels[keep] if nonmember_labels is not None else None
        notes.append(f"{overlap} held-out image{'s are' if overlap != 1 else ' is'} byte-identical to an image the "
                     f"model trained on and {'were' if overlap != 1 else 'was'} left out of the non-members")
    used = min(int(n), members.shape[0], nonmembers.shape[0])
    if used < 2:
        raise DataError(f"need at least 2 training and 2 held-out images to compare, got {members.shape[0]} and "
                        f"{nonmembers.shape[0]}")
    labelled = member_labels is not None and nonmember_labels is not None
    chosen, why = choose_attack(model, attack, labelled=labelled)
    g = torch.Generator().manual_seed(seed)
    pick_m = torch.randperm(members.shape[0], generator=g)[:used]
    order_f = torch.randperm(nonmembers.shape[0], generator=g)
    pick_f, spare = order_f[:used], order_f[used:]

    from atelier.device import ensure_fits
    from atelier.models.sampling import check_sample_count, sample_images

    n_samples = check_sample_count(n_samples, "n_samples")
    pixels = members[0].numel()
    # the samples, and the float copies the nearest-neighbour searches make of them and of both image sets
    ensure_fits(n_samples * pixels * 9 + (members.shape[0] + nonmembers.shape[0]) * pixels * 8,
                f"auditing with {n_samples:,} samples against {members.shape[0]:,} training and "
                f"{nonmembers.shape[0]:,} held-out images", advice="draw fewer samples (n_samples)")
    check_stop(should_stop, "before sampling")
    with torch.no_grad():
        generated = sample_images(model, n_samples, seed=seed, batch_size=batch_size).images
    check_stop(should_stop, "after sampling")
    nov = novelty(generated, members, heldout=nonmembers, quantile=copy_quantile, seed=seed)
    check_stop(should_stop, "after the near-copy check")
    xm, xf = members[pick_m], nonmembers[pick_f]
    lm = member_labels[pick_m] if labelled else None
    lf = nonmember_labels[pick_f] if labelled else None
    if chosen == "discriminator":
        sm = discriminator_scores(model, xm, lm, batch_size=batch_size, should_stop=should_stop)
        sf = discriminator_scores(model, xf, lf, batch_size=batch_size, should_stop=should_stop)
        how = f"discriminator logit ({why})"
    elif chosen == "elbo":
        sm = elbo_scores(model, xm, lm, samples=elbo_samples, seed=seed, batch_size=batch_size, should_stop=should_stop)
        sf = elbo_scores(model, xf, lf, samples=elbo_samples, seed=seed, batch_size=batch_size, should_stop=should_stop)
        how = f"ELBO over {elbo_samples} posterior draws, averaged networks ({why})"
    else:
        reference = nonmembers[spare] if spare.numel() >= 10 else None
        sm, sf = (distance_scores(x, generated, reference) for x in (xm, xf))
        how = (f"distance to the nearest of {n_samples} samples, " + (
            f"calibrated by the nearest of {spare.numel()} other held-out images" if reference is not None else
            "uncalibrated (no held-out images to spare)") + f" ({why})")
    check_stop(should_stop, "after scoring")
    result = membership_advantage(sm, sf, low_fpr=low_fpr, bootstrap=bootstrap, confidence=confidence, seed=seed,
                                  attack=chosen, how=how)
    count = int(nov.near_copy.sum())
    from atelier import __version__

    provenance = {"family": getattr(model, "family", type(model).__name__), "attack": chosen, "seed": seed,
                  "n": used, "n_samples": n_samples, "bootstrap": bootstrap, "confidence": confidence,
                  "low_fpr": low_fpr, "copy_quantile": copy_quantile, "elbo_samples": elbo_samples,
                  "also_seen": 0 if also_seen is None else int(also_seen.shape[0]),
                  "sources": dict(sources or {}), "atelier_version": __version__, "torch_version": torch.__version__,
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    return AuditReport(result, nov.near_copy_fraction, nov.memorisation_ratio,
                       _binomial_tail(count, generated.shape[0], copy_quantile), nov.threshold, generated.shape[0],
                       members.shape[0], nonmembers.shape[0], overlap, notes, provenance)


# -- a run's own data --------------------------------------------------------------------------------
@dataclass
class AuditData:
    members: ImageDataset
    nonmembers: ImageDataset
    notes: list[str]
    sources: dict
    also_seen: torch.Tensor | None = None  # images an init-from source trained on: never non-members


def _parse_split(split: str) -> tuple[str, int | None, int | None] | None:
    """(split, start, stop) of "train" or a slice such as "train[:30000]"; None when it is no split."""
    from atelier.data.registry import parse_split

    try:
        return parse_split(split)
    except DataError:
        return None


def _disjoint(a: tuple[str, int | None, int | None], b: tuple[str, int | None, int | None]) -> bool:
    """Whether two (split, start, stop) of one dataset share no image ("all" holds both splits)."""
    if a[0] != b[0]:
        return "all" not in (a[0], b[0])
    return max(a[1] or 0, b[1] or 0) >= min(math.inf if a[2] is None else a[2], math.inf if b[2] is None else b[2])


def _init_source_data(run_config: dict, load: dict, notes: list[str]) -> torch.Tensor | None:
    """The training images of the model a fine-tuned run started from, when its saved config says them."""
    from atelier.data.registry import load_dataset
    from atelier.models.pretrained import resolve_pretrained

    record = run_config.get("init_from")
    if not isinstance(record, dict):
        return None
    where = record.get("source", "?")
    try:
        source_data = resolve_pretrained(where)[1].get("data") or {}
        seen = load_dataset(source_data["name"], split=source_data.get("split", "train"),
                            **{**load, "data_dir": source_data.get("data_dir")})
    except Exception as exc:  # a moved, sealed or odd source: the audit goes on and says what it could not check
        notes.append(f"the model started from the weights of {where}, whose training images could not be read "
                     f"({type(exc).__name__}): held-out images that model saw would count as non-members")
        return None
    notes.append(f"the model started from the weights of {where} ({seen.name}): its {len(seen)} training images "
                 "are kept out of the non-members too")
    return seen.images


def load_audit_data(run_config: dict, *, resolution: int, channels: int, data: str | None = None,
                    data_dir: str | None = None, split: str | None = None, heldout: str = "test",
                    progress: bool = False) -> AuditData:
    """The training images of a run (its saved data config: dataset and split, or a slice of one such as
    ``train[30000:]``) and held-out images of the same dataset: another split or a slice disjoint from the
    training one (``heldout``, default "test"), or a folder (``folder:PATH``) of images it never saw.
    ``data`` (and ``split``) declare or override what it was trained on. For a run fine-tuned from another
    model (``init_from``), that model's training images are returned as ``also_seen``."""
    from atelier.data.registry import load_dataset

    run_data = run_config.get("data") or {}
    recorded = run_config.get("dataset") or {}
    notes: list[str] = []
    spec = data or run_data.get("name")
    if not spec:
        raise DataError(Message("the model does not record the data it was trained on: say which with ",
                                Option("data", "data="), " (digits | mnist | cifar10 | folder:PATH)"))
    own = run_data.get("name") == spec
    data_dir = data_dir or (run_data.get("data_dir") if own else None)
    split = split or (run_data.get("split") if own else None) or "train"
    if not run_data:
        notes.append(f"the model does not record its training data: {spec}:{split} is taken as its training images, "
                     "as declared")
    elif not own or split != run_data.get("split"):
        notes.append(f"the run trained on {run_data.get('name')}:{run_data.get('split')}; {spec}:{split} is taken as "
                     "its training images, as declared")
    load = dict(resolution=resolution, channels=channels, data_dir=data_dir, progress=progress,
                verify=run_data.get("verify", True) if own else True)
    members = load_dataset(spec, split=split, **load)
    if own and recorded.get("size") not in (None, len(members)) and split == run_data.get("split"):
        notes.append(f"the run trained on {recorded['size']} images but {members.name} now holds {len(members)}: the "
                     "data changed since, so some members or non-members may be wrong")
    held_split, member_split = _parse_split(heldout), _parse_split(split)
    if held_split is not None:
        if member_split is None or not _disjoint(member_split, held_split):
            raise DataError(f"{spec}: the training split {split!r} and the held-out split {heldout!r} may share "
                            "images, so no images of it are known to be unseen; give a held-out split or slice "
                            "disjoint from the training one, or a folder of images the model never saw (folder:PATH)")
        nonmembers = load_dataset(spec, split=heldout, **load)
        notes.append(f"members and non-members are disjoint by split ({spec}: {split} vs {heldout}), and checked "
                     "byte for byte")
        if held_split[0] != member_split[0]:
            notes.append(f"members and non-members come from different splits ({member_split[0]} and {held_split[0]}): "
                         "where those differ (MNIST's test digits were written by partly other people), the attack "
                         "measures that difference too; for a clean reading train on a slice (e.g. train[:50000]) "
                         "and hold out the rest of the same split (--heldout 'train[50000:]')")
    else:
        nonmembers = load_dataset(heldout, split="all", resolution=resolution, channels=channels, progress=progress)
        notes.append(f"the held-out images ({heldout}) are declared unseen; only byte-identical copies of training "
                     "images can be ruled out")
        if nonmembers.classes != members.classes:
            nonmembers = ImageDataset(nonmembers.images, None, None, nonmembers.name, nonmembers.meta)
    seen = _init_source_data(run_config, load, notes)
    return AuditData(members, nonmembers, notes, {"members": members.name, "nonmembers": nonmembers.name,
                                                  "data_dir": data_dir}, seen)
