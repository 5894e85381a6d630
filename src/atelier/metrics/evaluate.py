"""The evaluator: every distribution metric for one set of generated images, with its provenance.

    >>> ev = Evaluator(EvalConfig(data="mnist", data_dir="...", split="test"), resolution=28)
    >>> result = ev.evaluate(images_uint8)         # (N, C, H, W)
    >>> result.metrics["fid"], result.provenance["extractor_sha256"]

The real side (features, statistics, k-NN radii) is computed once per dataset/extractor and cached
(:mod:`atelier.metrics.reference`); generated images go through the same extractor once and the
features are shared by FID, KID, IS, precision/recall/density/coverage and the two-sample test. The
memorisation check works in pixel space against the training split.
"""

from __future__ import annotations

import datetime
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Annotated, Literal

import annotated_types as at
import torch

from atelier.config import Config, NonNegative, Seed
from atelier.data import DataError, load_dataset
from atelier.data.base import ConversionNote, Message, Option
from atelier.data.resize import convert_channels, resize_square
from atelier.metrics.c2st import classifier_two_sample_test
from atelier.metrics.extractors import choose_extractor, load_extractor
from atelier.metrics.frechet import feature_stats, frechet_distance
from atelier.metrics.inception_score import inception_score
from atelier.metrics.kid import kernel_inception_distance
from atelier.metrics.manifold import manifold_metrics
from atelier.metrics.memorisation import NoveltyResult, novelty
from atelier.metrics.reference import compute_reference
from atelier.signals import ShouldStop, check_stop

#: Metric groups; ``EvalConfig.metrics`` picks among them.
METRIC_GROUPS = ("fid", "kid", "is", "pr", "c2st", "novelty")
#: Top-level keys of metrics.json, in table order.
METRIC_KEYS = ("fid", "kid_mean", "kid_std", "is", "is_std", "precision", "recall", "density", "coverage",
               "c2st_accuracy", "c2st_p_value", "near_copy_fraction", "memorisation_ratio")

#: The most samples one evaluation draws (and real images it compares with): 200,000 64 px RGB images
#: take 2.5 GB, and their features several more.
MAX_EVAL_N = 200_000
Neighbours = Annotated[int, at.Interval(ge=1, le=1000)]  # k of a nearest-neighbour metric


@dataclass
class EvalConfig(Config):
    """How to evaluate; saved in every result's provenance."""

    data: str | None = None  # the real data: digits | mnist | folder:PATH (None: a run's own data)
    data_dir: str | None = None
    split: str = "test"  # real split compared against
    n: Annotated[int, at.Interval(ge=10, le=MAX_EVAL_N)] = 10000  # generated samples to draw, and the most real samples used
    seed: Seed = 0  # sampling, real subset, KID subsets, C2ST split
    extractor: str | None = None  # default: mnist-cnn / digits-cnn / cifar10-cnn, a folder's fitted one, else inception-v3
    inception_weights: str | None = None
    resize: str | None = None  # inception-v3 resize mode (default tf-bilinear)
    verify_weights: bool = True  # check the InceptionV3 file's SHA-256 (off for deliberately other weights)
    metrics: tuple[str, ...] = METRIC_GROUPS
    kid_subsets: Annotated[int, at.Interval(ge=1, le=10_000)] = 100
    kid_subset_size: Annotated[int, at.Interval(ge=2, le=MAX_EVAL_N)] = 1000
    k: Neighbours = 3  # precision/recall neighbours
    k_density: Neighbours = 5  # density/coverage neighbours
    is_splits: Annotated[int, at.Interval(ge=1, le=1000)] = 10
    c2st_space: Literal["features", "pixels"] = "features"  # features | pixels
    copy_quantile: Annotated[float, at.Interval(gt=0.0, lt=1.0)] = 0.01  # near-copy threshold: this quantile of real images' own NN distances
    copy_threshold: NonNegative | None = None  # or a fixed RMS pixel distance
    batch_size: Annotated[int, at.Interval(ge=1, le=2**16)] = 500
    device: str = "cpu"
    cache: bool = True  # cache reference statistics

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = set(self.metrics) - set(METRIC_GROUPS)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {', '.join(METRIC_GROUPS)}")
        if self.data is not None and not self.data:
            raise ValueError("data must name a dataset")


@dataclass
class EvalResult:
    metrics: dict[str, float | None]
    provenance: dict
    images: torch.Tensor  # the generated images evaluated, uint8 (N, C, H, W)
    novelty: NoveltyResult | None = None
    train_images: torch.Tensor | None = None  # for showing nearest-neighbour pairs
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        details = {"timings_s": {k: round(v, 3) for k, v in self.timings.items()}}
        if self.novelty is not None:
            details["novelty"] = self.novelty.summary()
        return {**{k: self.metrics.get(k) for k in METRIC_KEYS}, "provenance": self.provenance, "details": details}

    def table(self) -> str:
        rows = [(k, v) for k, v in ((k, self.metrics.get(k)) for k in METRIC_KEYS) if v is not None]
        p = self.provenance
        accuracy = p.get("classifier_test_accuracy")
        lines = [f"{p['n_fake']} generated vs {p['n_real']} real ({p['dataset']}:{p['split']}), "
                 f"extractor {p['extractor']} ({p['extractor_sha256'][:12]}"
                 + (f", held-out accuracy {accuracy:.4f})" if isinstance(accuracy, float) else ")")]
        lines += [f"  {k:20s} {v:12.5g}" for k, v in rows]
        return "\n".join(lines)


def _looks(size: tuple[int, int], channels: int) -> str:
    """(height, width) and a channel count in words: "32x32 RGB", "28x28 grey"."""
    return f"{size[1]}x{size[0]} {'grey' if channels == 1 else 'RGB'}"


class Evaluator:
    """Holds the extractor and the real reference for one dataset, resolution and channel count.

    ``should_stop`` (e.g. an :class:`atelier.signals.StopRequest`) is asked between batches of feature
    extraction and between metrics; True raises :class:`atelier.signals.Stopped` and nothing is
    returned (a reference computed completely is still cached).
    """

    def __init__(self, cfg: EvalConfig, *, resolution: int, channels: int | None = None, progress: bool = True,
                 should_stop: ShouldStop | None = None) -> None:
        if cfg.data is None:
            raise DataError(Message("say which real data to compare against (", Option("data", "EvalConfig.data"),
                                    ", e.g. 'mnist')"))
        self.cfg, self.progress, self.should_stop = cfg, progress, should_stop
        t0 = time.perf_counter()
        # chosen first: a folder with no meaningful extractor is refused before its images are decoded
        name = cfg.extractor or choose_extractor(cfg.data, data_dir=cfg.data_dir, resolution=resolution,
                                                 inception_weights=cfg.inception_weights)
        self.real = load_dataset(cfg.data, resolution=resolution, split=cfg.split, data_dir=cfg.data_dir,
                                 channels=channels, progress=progress)
        check_stop(should_stop, "after loading the real data")
        self.extractor = load_extractor(name, device=cfg.device,
                                        data_dir=cfg.data_dir, inception_weights=cfg.inception_weights,
                                        resize=cfg.resize, verify=cfg.verify_weights, progress=progress)
        check_stop(should_stop, "after loading the extractor")
        self.reference = compute_reference(self.real, self.extractor, split=cfg.split, n=cfg.n, seed=cfg.seed,
                                           cache=cfg.cache, batch_size=cfg.batch_size, progress=progress,
                                           should_stop=should_stop)
        self.setup_seconds = time.perf_counter() - t0
        self._train: torch.Tensor | None = None

    @property
    def resolution(self) -> int:
        return self.real.resolution

    @property
    def channels(self) -> int:
        return self.real.channels

    def train_images(self) -> torch.Tensor:
        """The training split at the evaluation resolution (for the memorisation check), loaded once."""
        if self._train is None:
            self._train = load_dataset(self.cfg.data, resolution=self.resolution, split="train",
                                       data_dir=self.cfg.data_dir, channels=self.channels, progress=self.progress).images
        return self._train

    def reference_conversion(self) -> list[str]:
        """How the real data was changed from its natural form to this evaluator's size and channels."""
        meta, notes = self.real.meta, []
        natural = meta.get("natural_channels")
        if natural is not None and natural != self.channels:
            notes.append(f"channels {natural} -> {self.channels}")
        original = meta.get("original_resolution")
        if original and original != self.resolution:
            notes.append(f"resized {original}x{original} -> {self.resolution}x{self.resolution}")
        return notes

    def conform(self, images: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """Bring generated images to the real data's size and channels; say what was changed (in the
        returned notes, which go into the provenance, and in a :class:`ConversionNote` warning, which
        the CLI prints as a ``note:`` line)."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"generated images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        notes, done = [], []
        before = _looks(tuple(images.shape[-2:]), images.shape[1])
        target = (self.resolution, self.resolution)
        if images.shape[-2:] != target:
            done.append(f"resized to {_looks(target, self.channels).split()[0]}")
        if images.shape[1] != self.channels:
            notes.append(f"channels {images.shape[1]} -> {self.channels}")
            done.append(f"converted to {'grey' if self.channels == 1 else 'RGB'}")
            images = convert_channels(images, self.channels)
        if images.shape[-2:] != target:
            notes.append(f"resized {images.shape[-2]}x{images.shape[-1]} -> {self.resolution}x{self.resolution}")
            images = resize_square(images, self.resolution)
        if done:
            warnings.warn(ConversionNote(
                f"samples are {before}, the reference ({self.real.name}) is {_looks(target, self.channels)}: "
                f"{' and '.join(done)} before scoring"), stacklevel=3)
        return images, notes

    def evaluate(self, images: torch.Tensor, *, metrics: tuple[str, ...] | None = None, source: str = "",
                 should_stop: ShouldStop | None = None) -> EvalResult:
        """Every metric of ``metrics`` (default: the config's) for uint8 (N, C, H, W) ``images``.
        ``should_stop`` (default: the evaluator's) is asked between batches and metrics; True raises
        :class:`atelier.signals.Stopped`."""
        cfg, ref = self.cfg, self.reference
        should_stop = should_stop if should_stop is not None else self.should_stop
        groups = tuple(metrics or cfg.metrics)
        images, notes = self.conform(images)
        if images.shape[0] < 10:
            raise DataError(f"need at least 10 generated images, got {images.shape[0]}")
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = now - clock
            clock = now
            check_stop(should_stop, f"after {name}")

        fake = self.extractor(images, batch_size=cfg.batch_size, progress=self.progress, should_stop=should_stop)
        if not torch.isfinite(fake.features).all():
            raise DataError("the extractor produced NaN/inf features for the generated images")
        lap("features")
        out: dict[str, float | None] = {}
        if "fid" in groups:
            out["fid"] = frechet_distance(feature_stats(fake.features), ref.stats)
            lap("fid")
        if "kid" in groups:
            out["kid_mean"], out["kid_std"] = kernel_inception_distance(
                ref.features, fake.features, subsets=cfg.kid_subsets, subset_size=cfg.kid_subset_size, seed=cfg.seed)
            lap("kid")
        if "is" in groups and fake.logits is not None:
            out["is"], out["is_std"] = inception_score(fake.logits, splits=min(cfg.is_splits, images.shape[0]))
            lap("is")
        pr_fake = fake.features
        if "pr" in groups:
            # k-NN metrics are biased by unequal set sizes: compare equal numbers (a seeded subset).
            if pr_fake.shape[0] > ref.features.shape[0]:
                g = torch.Generator().manual_seed(cfg.seed)
                pr_fake = pr_fake[torch.randperm(pr_fake.shape[0], generator=g)[: ref.features.shape[0]]]
            radii = ref.radii if (cfg.k, cfg.k_density) == (3, 5) else None
            out.update({k: v for k, v in manifold_metrics(ref.features, pr_fake, k=cfg.k, k_density=cfg.k_density,
                                                          real_radii=radii).to_dict().items() if k in METRIC_KEYS})
            lap("precision_recall")
        if "c2st" in groups:
            pair = (ref.features, fake.features) if cfg.c2st_space == "features" else (
                ref.images.float().div(255), images.float().div(255))
            c2 = classifier_two_sample_test(*pair, seed=cfg.seed)
            out["c2st_accuracy"], out["c2st_p_value"] = c2.accuracy, c2.p_value
            lap("c2st")
        nov = None
        train = None
        if "novelty" in groups:
            train = self.train_images()
            heldout = ref.images if cfg.split != "train" else None  # None: leave-one-out on training images
            nov = novelty(images, train, heldout=heldout, threshold=cfg.copy_threshold, quantile=cfg.copy_quantile,
                          seed=cfg.seed)
            out["near_copy_fraction"], out["memorisation_ratio"] = nov.near_copy_fraction, nov.memorisation_ratio
            lap("novelty")
        return EvalResult(out, self.provenance(images.shape[0], pr_fake.shape[0], groups, notes, source, nov),
                          images, nov, train, timings)

    def provenance(self, n_fake: int, n_fake_pr: int, groups, notes, source, nov) -> dict:
        from atelier import __version__

        cfg, meta = self.cfg, self.reference.meta
        prov = {
            **self.extractor.provenance(),
            "dataset": meta["dataset"], "split": cfg.split, "data_dir": cfg.data_dir,
            "n_real": meta["n"], "n_fake": n_fake, "seed": cfg.seed,
            "resolution": self.resolution, "channels": self.channels,
            "real_images_sha256": meta["images_sha256"], "reference_cached": self.reference.cached,
            "source": source, "generated_conversion": notes, "reference_conversion": self.reference_conversion(),
            "metrics": list(groups),
            "atelier_version": __version__, "torch_version": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        if "kid" in groups:
            prov["kid"] = {"kernel": "(x.y/d + 1)^3", "subsets": cfg.kid_subsets,
                           "subset_size": min(cfg.kid_subset_size, meta["n"], n_fake)}
        if "pr" in groups:
            prov["precision_recall"] = {"k": cfg.k, "k_density": cfg.k_density, "n_fake_used": n_fake_pr}
        if "is" in groups:
            prov["inception_score"] = {"splits": cfg.is_splits, "classifier": self.extractor.name}
        if "c2st" in groups:
            prov["c2st"] = {"space": cfg.c2st_space, "classifier": "MLP 2x256, 20 epochs, 50/50 split"}
        if nov is not None:
            prov["novelty"] = {"space": "pixels, RMS distance on 0..1", "train_n": int(self.train_images().shape[0]),
                               "threshold": nov.threshold, "quantile": nov.quantile,
                               "calibrated_on": ("fixed" if nov.quantile is None else
                                                 f"{cfg.split} split" if cfg.split != "train" else "training leave-one-out")}
        prov["config"] = asdict(cfg)
        return prov


def evaluate_images(images: torch.Tensor, cfg: EvalConfig, *, progress: bool = True, source: str = "",
                    should_stop: ShouldStop | None = None) -> EvalResult:
    """One-shot: build an evaluator at the images' resolution and channels, and evaluate them."""
    ev = Evaluator(cfg, resolution=images.shape[-1], channels=images.shape[1], progress=progress,
                   should_stop=should_stop)
    _say_reference_changed(ev, images)
    return ev.evaluate(images, source=source)


def _say_reference_changed(ev: Evaluator, images: torch.Tensor) -> None:
    """A :class:`ConversionNote` when the real data was converted between grey and RGB to match the
    given images. (Bringing it to their resolution is how every loader presents a dataset at a size,
    for training too, so that is only recorded in the provenance.)"""
    natural = ev.real.meta.get("natural_channels")
    if natural is not None and natural != ev.channels:
        warnings.warn(ConversionNote(
            f"samples are {_looks(tuple(images.shape[-2:]), images.shape[1])}, the reference ({ev.real.name}) is "
            f"{'grey' if natural == 1 else 'RGB'}: the reference was converted to "
            f"{'grey' if ev.channels == 1 else 'RGB'} to match them before scoring"), stacklevel=3)


def evaluate_source(source: str, cfg: EvalConfig, *, progress: bool = True,
                    should_stop: ShouldStop | None = None) -> EvalResult:
    """Evaluate a run directory (sampled here), an ``.npz`` or an image folder (see
    :func:`atelier.metrics.sources.load_generated`). A run's own data config fills in ``data`` and
    ``data_dir`` when they are not given, and sets the resolution and channels; for an ``.npz`` or a
    folder the real data is brought to the images' size and channels (a :class:`ConversionNote` says so
    when that converts it between grey and RGB). ``should_stop`` is asked between the stages, batches and metrics; True raises
    :class:`atelier.signals.Stopped` (nothing is returned or written)."""
    from dataclasses import replace

    from atelier.metrics.sources import load_generated

    generated = load_generated(source, n=cfg.n, seed=cfg.seed)
    check_stop(should_stop, "after loading the generated images")
    run_data = generated.run_config.get("data", {})
    if cfg.data is None:
        if not run_data:
            raise DataError(Message(f"{source}: say which real data to compare against (",
                                    Option("data", "EvalConfig.data"), ": mnist | digits | folder:PATH)"))
        cfg = replace(cfg, data=run_data["name"], data_dir=cfg.data_dir or run_data.get("data_dir"))
    ev = Evaluator(cfg, resolution=generated.images.shape[-1], channels=generated.images.shape[1], progress=progress,
                   should_stop=should_stop)
    if generated.kind != "model":  # a model's samples are compared with the data it was trained on, as trained
        _say_reference_changed(ev, generated.images)
    return ev.evaluate(generated.images, source=str(source))
