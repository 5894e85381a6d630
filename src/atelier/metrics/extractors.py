"""Feature extractors, chosen by name and identified by a SHA-256 of their weights.

    >>> ex = load_extractor("mnist-cnn")          # fitted and cached on first use
    >>> out = ex(images_uint8)                     # ExtractedFeatures(features (N, 128), logits (N, 10))
    >>> ex.provenance()                            # name, weights hash, resize mode, ...

- ``mnist-cnn`` / ``digits-cnn``: the domain classifiers of :mod:`atelier.metrics.classifier`,
  the default for those datasets (InceptionV3 features say little about 28x28 digits).
- ``inception-v3``: the TF 2015-12-05 InceptionV3 used by the FID paper, for papers-comparable
  numbers on natural images (needs its weights file; see :mod:`atelier.metrics.inception`).

Every extractor takes uint8 (N, C, H, W) images of any size and channel count and says how it
resized and converted them, so a metric can always name how it was computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from atelier.data import DataError
from atelier.data.resize import convert_channels
from atelier.device import check_device
from atelier.signals import ShouldStop, check_stop

#: The extractor used by default for each dataset family; anything else gets InceptionV3.
DEFAULT_EXTRACTORS = {"mnist": "mnist-cnn", "digits": "digits-cnn"}


@dataclass
class ExtractedFeatures:
    features: torch.Tensor  # (N, D) float32
    logits: torch.Tensor | None  # (N, K) float32, for the Inception-style score


def dataset_family(spec: str) -> str:
    """"mnist" for "mnist", "digits:train" -> "digits"; a folder spec stays as it is."""
    return spec.split(":", 1)[0] if spec.split(":", 1)[0] in DEFAULT_EXTRACTORS else spec


def default_extractor(dataset: str) -> str:
    return DEFAULT_EXTRACTORS.get(dataset_family(dataset), "inception-v3")


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
    """A domain classifier: 128-d penultimate features and class logits."""

    def __init__(self, name: str, fitted, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self.name, self.sha256 = name, fitted.sha256
        self.model = fitted.model.eval().to(self.device)
        self.test_accuracy = fitted.test_accuracy
        self.channels = self.model.body[0].in_channels
        self.feature_dim = self.model.head.in_features
        self.resize = "bilinear, antialiased, to 28x28 (PyTorch F.interpolate); colour to grey by BT.601 luma"

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = convert_channels(images.cpu(), self.channels).to(self.device).float().div_(127.5).sub_(1.0)
        feats = self.model.features(x)  # resizes to 28x28 itself when needed
        return feats, self.model.head(feats)

    def provenance(self) -> dict:
        return {**super().provenance(), "classifier_test_accuracy": self.test_accuracy}


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


EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {
    "mnist-cnn": _domain_classifier("mnist"),
    "digits-cnn": _domain_classifier("digits"),
    "inception-v3": _inception,
}


def list_extractors() -> list[str]:
    return sorted(EXTRACTORS)


def load_extractor(name: str, **kwargs) -> FeatureExtractor:
    """Build the extractor ``name``. Keywords: ``device``; domain classifiers: ``data_dir``, ``fit``
    (fit and cache when missing, default True), ``progress``; inception: ``inception_weights`` (a
    local file), ``resize`` (see :data:`atelier.metrics.inception.RESIZE_MODES`), ``download``, ``verify``."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; available: {', '.join(list_extractors())}")
    if kwargs.get("resize") and name != "inception-v3":
        raise ValueError(f"--resize applies to inception-v3 only; {name} always resizes to 28x28")
    return EXTRACTORS[name](**kwargs)
