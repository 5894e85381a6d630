"""Feature extractors, chosen by name and identified by a SHA-256 of their weights.

    >>> ex = load_extractor("mnist-cnn")          # fitted and cached on first use
    >>> out = ex(images_uint8)                     # ExtractedFeatures(features (N, 128), logits (N, 10))
    >>> ex.provenance()                            # name, weights hash, resize mode, held-out accuracy, ...

- ``mnist-cnn`` / ``digits-cnn`` / ``cifar10-cnn``: the domain classifiers of
  :mod:`atelier.metrics.classifier`, the default for those datasets (InceptionV3 features say little
  about 28x28 digits, and its weights may not be at hand offline).
- ``folder-cnn:<12 hex>``: the classifier fitted for a labelled image folder
  (:mod:`atelier.metrics.folder_classifier`), the default for that folder's content once fitted.
- ``inception-v3``: the TF 2015-12-05 InceptionV3 used by the FID paper, for papers-comparable
  numbers on natural images (needs its weights file; see :mod:`atelier.metrics.inception`).

:func:`choose_extractor` picks the default for a dataset spec, and refuses (rather than measure in
features that mean nothing) when a folder has neither a fitted extractor nor InceptionV3 weights.
Every extractor takes uint8 (N, C, H, W) images of any size and channel count and says how it
resized and converted them, so a metric can always name how it was computed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from atelier.data import DataError
from atelier.data.base import Message, Option
from atelier.data.resize import convert_channels
from atelier.device import check_device
from atelier.signals import ShouldStop, check_stop

#: The extractor used by default for each dataset family; a folder gets its fitted extractor, else InceptionV3.
DEFAULT_EXTRACTORS = {"mnist": "mnist-cnn", "digits": "digits-cnn", "cifar10": "cifar10-cnn"}
FOLDER_PREFIX = "folder-cnn:"


@dataclass
class ExtractedFeatures:
    features: torch.Tensor  # (N, D) float32
    logits: torch.Tensor | None  # (N, K) float32, for the Inception-style score


def dataset_family(spec: str) -> str:
    """"mnist" for "mnist", "digits:train" -> "digits"; a folder spec stays as it is."""
    return spec.split(":", 1)[0] if spec.split(":", 1)[0] in DEFAULT_EXTRACTORS else spec


def default_extractor(dataset: str, *, data_dir: str | None = None, resolution: int | None = None) -> str:
    """The extractor a dataset spec is evaluated with by default: its domain classifier (mnist, digits,
    cifar10); for an image folder, the extractor fitted for its current content if there is one (see
    :func:`atelier.metrics.folder_classifier.find_folder_extractor`); else ``inception-v3``."""
    family = dataset_family(dataset)
    if family in DEFAULT_EXTRACTORS:
        return DEFAULT_EXTRACTORS[family]
    from atelier.metrics.folder_classifier import find_folder_extractor, folder_of_spec

    folder = folder_of_spec(dataset, data_dir)
    return (find_folder_extractor(folder, resolution) if folder is not None else None) or "inception-v3"


def inception_weights_at_hand(inception_weights: str | None = None) -> bool:
    """Whether InceptionV3 weights are there without a download: the given file, or the cached one."""
    from atelier.metrics.inception import INCEPTION_SPEC

    if inception_weights is not None:
        return True  # a given path is used (and a missing one is an error that names it)
    return INCEPTION_SPEC.cache_path().is_file()


def choose_extractor(dataset: str, *, data_dir: str | None = None, resolution: int | None = None,
                     inception_weights: str | None = None) -> str:
    """The default extractor for ``dataset`` (see :func:`default_extractor`), when it can mean something.

    A folder with no fitted extractor falls to InceptionV3 only when its weights are at hand (given or
    cached; asking for ``inception-v3`` by name may download them). Otherwise DataError, naming both
    ways out: fitting an extractor on the folder's class sub-folders, or supplying InceptionV3 weights."""
    from atelier.metrics.folder_classifier import folder_of_spec, is_folder

    folder = folder_of_spec(dataset, data_dir)
    if folder is not None and not is_folder(folder):
        raise DataError(f"image folder {folder} does not exist (dataset spec {dataset!r})")
    name = default_extractor(dataset, data_dir=data_dir, resolution=resolution)
    if name != "inception-v3" or folder is None or inception_weights_at_hand(inception_weights):
        return name  # (a named dataset without a domain classifier gets InceptionV3, downloaded if need be)
    raise DataError(_no_extractor_message(dataset, data_dir))


def _no_extractor_message(dataset: str, data_dir: str | None) -> Message:
    from atelier.metrics.folder_classifier import folder_of_spec, scan_folder
    from atelier.metrics.inception import INCEPTION_SPEC

    folder = folder_of_spec(dataset, data_dir)
    what = f"folder:{folder}"
    fit = f"`atelier metrics fit-classifier --data folder:{folder}`"
    try:
        classes = scan_folder(folder).classes
    except DataError:
        classes = None
    if classes is not None and len(classes) >= 2:
        shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        first = (f"fit a domain extractor on its {len(classes)} class sub-folders ({shown}) once with {fit} "
                 "(minutes on a CPU; cached, and used by default afterwards)")
    else:
        first = (f"label it (it has no class sub-folders, so no domain extractor can be fitted on it as it is): sort "
                 f"its images into {folder}/CLASS/ sub-folders, at least two classes, and run {fit}")
    return Message(
        f"no feature extractor that means anything for {what}: no domain extractor has been fitted for it and the "
        f"InceptionV3 FID weights are not at hand ({INCEPTION_SPEC.filename} is not at {INCEPTION_SPEC.cache_path()}); "
        "FID, KID and precision/recall in other features (a random network's) would mean nothing, so nothing was "
        "computed. "
        f"Either {first}; or supply the InceptionV3 weights: put the file at that path, pass ",
        Option("inception_weights_path", "inception_weights=PATH"), ", or choose ",
        Option("extractor_inception", 'extractor="inception-v3"'),
        f" to download it from {INCEPTION_SPEC.resolve_url(None)} (numbers comparable with papers).")


class FeatureExtractor:
    """Base class: ``__call__`` batches uint8 images through ``_forward`` under ``inference_mode``."""

    name: str = ""
    sha256: str = ""
    resize: str = ""  # how images are brought to the network's input, in words
    feature_dim: int = 0

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = check_device(device)

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, *, batch_size: int = 500, progress: bool = False,
                 should_stop: ShouldStop | None = None) -> ExtractedFeatures:
        """Features of uint8 (N, C, H, W) images; ``should_stop`` is asked before each batch and True
        raises :class:`atelier.signals.Stopped`."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"extractors take uint8 (N, C, H, W) images, got {images.dtype} {tuple(images.shape)}")
        feats, logits = [], []
        with torch.inference_mode():
            for i in tqdm(range(0, images.shape[0], batch_size), desc=f"features ({self.name})", leave=False,
                          disable=not progress):
                check_stop(should_stop, f"extracting {self.name} features")
                f, lg = self._forward(images[i : i + batch_size].to(self.device))
                feats.append(f.float().cpu())
                if lg is not None:
                    logits.append(lg.float().cpu())
        return ExtractedFeatures(torch.cat(feats), torch.cat(logits) if logits else None)

    def provenance(self) -> dict:
        return {"extractor": self.name, "extractor_sha256": self.sha256, "resize": self.resize,
                "feature_dim": self.feature_dim}


class ClassifierExtractor(FeatureExtractor):
    """A domain classifier: its penultimate features (128-d for the built-in ones) and class logits."""

    def __init__(self, name: str, fitted, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self.name, self.sha256 = name, fitted.sha256
        self.model = fitted.model.eval().to(self.device)
        self.test_accuracy = fitted.test_accuracy
        self.info = dict(getattr(fitted, "info", {}) or {})
        self.channels = self.model.channels
        self.feature_dim = self.model.feature_dim
        r = self.model.resolution
        self.resize = (f"bilinear, antialiased, to {r}x{r} (PyTorch F.interpolate); "
                       + ("colour to grey by BT.601 luma" if self.channels == 1 else "grey repeated to RGB"))

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = convert_channels(images.cpu(), self.channels).to(self.device).float().div_(127.5).sub_(1.0)
        feats = self.model.features(x)  # resizes to the network's resolution itself when needed
        return feats, self.model.head(feats)

    def provenance(self) -> dict:
        """Besides the base fields: the held-out accuracy, and what the classifier was trained on (for a
        folder extractor, the folder and its content hash)."""
        out = {**super().provenance(), "classifier_test_accuracy": self.test_accuracy}
        for key in ("trained_on", "content_sha256", "resolution", "n_train", "n_test", "held_out"):
            if key in self.info:
                out[f"classifier_{key}"] = self.info[key]
        return out


class InceptionExtractor(FeatureExtractor):
    """InceptionV3 (TF 2015-12-05 weights): 2048-d pool3 features and 1008 logits."""

    # How each reference implementation maps pixels to [-1, 1] after resizing.
    _NORMALISE = {"tf-bilinear": (128.0, 128.0), "bilinear": (127.5, 127.5), "bicubic-antialias": (127.5, 127.5)}
    _REFERENCE = {"tf-bilinear": "TTUR / torch-fidelity", "bilinear": "pytorch-fid", "bicubic-antialias": "clean-fid (approx.)"}

    def __init__(self, model, sha256: str, resize_mode: str = "tf-bilinear", device: str | torch.device = "cpu") -> None:
        from atelier.metrics.inception import RESIZE_MODES

        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {resize_mode!r}; use one of {RESIZE_MODES}")
        super().__init__(device)
        self.model = model.eval().to(self.device)
        self.name, self.sha256, self.mode = "inception-v3", sha256, resize_mode
        self.feature_dim = 2048
        self.resize = f"{resize_mode} to 299x299 (as {self._REFERENCE[resize_mode]}); grey repeated to RGB"

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from atelier.metrics.inception import resize_for_inception

        x = convert_channels(images.cpu(), 3).to(self.device).float()  # (B, 3, H, W), 0..255
        x = resize_for_inception(x, 299, self.mode)
        if self.mode == "bicubic-antialias":  # bicubic overshoots; clean-fid clips to the pixel range
            x = x.clamp_(0.0, 255.0)
        shift, scale = self._NORMALISE[self.mode]
        return self.model((x - shift) / scale)


def _domain_classifier(dataset: str) -> Callable[..., FeatureExtractor]:
    def build(*, device="cpu", data_dir=None, fit=True, progress=True, **_) -> FeatureExtractor:
        from atelier.metrics.classifier import DOMAIN_CLASSIFIERS, fit_domain_classifier, load_classifier

        name = DOMAIN_CLASSIFIERS[dataset]
        fitted = load_classifier(name)
        if fitted is None:
            if not fit:
                raise DataError(f"the {name} classifier is not fitted yet; run "
                                f"`atelier metrics fit-classifier --data {dataset}`")
            print(f"fitting the {name} domain classifier on {dataset} (once; cached in $ATELIER_HOME/classifiers)")
            fitted = fit_domain_classifier(dataset, data_dir=data_dir, progress=progress)
        return ClassifierExtractor(name, fitted, device)

    return build


def _inception(*, device="cpu", inception_weights=None, resize=None, download=True, verify=True, **_) -> FeatureExtractor:
    from atelier.metrics.inception import inception_weights_path, load_inception

    from atelier.data.download import sha256_stream

    path = inception_weights_path(inception_weights, download=download, verify=verify)
    model = load_inception(path, download=False, verify=False, device=device)
    with open(path, "rb") as f:
        digest = sha256_stream(f)
    return InceptionExtractor(model, digest, resize or "tf-bilinear", device)


def _folder_classifier(name: str, *, device="cpu", **_) -> FeatureExtractor:
    from atelier.metrics.classifier import load_classifier

    fitted = load_classifier(name)
    if fitted is None:
        raise DataError(f"the {name} extractor is not in the cache ($ATELIER_HOME/classifiers); fit it for its folder "
                        "with `atelier metrics fit-classifier --data folder:PATH` (`atelier metrics extractors` lists "
                        "the fitted ones)")
    return ClassifierExtractor(name, fitted, device)


EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {
    "mnist-cnn": _domain_classifier("mnist"),
    "digits-cnn": _domain_classifier("digits"),
    "cifar10-cnn": _domain_classifier("cifar10"),
    "inception-v3": _inception,
}


def list_extractors() -> list[str]:
    """The built-in extractors and the folder extractors fitted in the cache."""
    from atelier.metrics.folder_classifier import fitted_folder_extractors

    return sorted(EXTRACTORS) + sorted(meta["name"] for meta in fitted_folder_extractors())


def load_extractor(name: str, **kwargs) -> FeatureExtractor:
    """Build the extractor ``name`` (see :func:`list_extractors`). Keywords: ``device``; domain classifiers:
    ``data_dir``, ``fit`` (fit and cache when missing, default True), ``progress``; inception:
    ``inception_weights`` (a local file), ``resize`` (see :data:`atelier.metrics.inception.RESIZE_MODES`), ``download``, ``verify``."""
    if kwargs.get("resize") and name != "inception-v3":
        raise ValueError(f"--resize applies to inception-v3 only; {name} resizes images to its own resolution")
    if name.startswith(FOLDER_PREFIX):
        if not re.fullmatch(r"folder-cnn:[0-9a-f]{12}", name):
            raise ValueError(f"unknown feature extractor {name!r}: a folder's is named {FOLDER_PREFIX} and 12 hex "
                             "digits")
        return _folder_classifier(name, **kwargs)
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; available: {', '.join(list_extractors())} "
                         f"(and {FOLDER_PREFIX}<hash> once fitted for a folder)")
    return EXTRACTORS[name](**kwargs)
