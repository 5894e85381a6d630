"""Domain classifiers: networks fitted on the data itself, whose penultimate layer is the feature space
of FID/KID/precision/recall when InceptionV3 is unsuitable (28x28 digits) or unavailable (offline).

- :class:`DigitClassifier` (``digit-cnn``): a small CNN for 28x28 digits, the ``mnist-cnn`` and
  ``digits-cnn`` extractors (128-d features).
- :class:`~atelier.metrics.colour_classifier.ResNetClassifier` (``resnet9``): a narrow ResNet for
  32x32 colour images, the ``cifar10-cnn`` extractor and the extractors fitted for labelled image folders
  (:mod:`atelier.metrics.folder_classifier`).

Weights are stored as safetensors in the cache (``$ATELIER_HOME/classifiers``) beside a JSON file with
the architecture, the held-out accuracy and what the network was trained on, and identified by a
SHA-256 of their bytes.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from atelier.data import DataError, ImageDataset, cache_dir, to_float
from atelier.metrics.colour_classifier import ARCH as RESNET, ResNetClassifier, crop_flip

DIGIT = "digit-cnn"


class DigitClassifier(nn.Module):
    """(B, 1, 28, 28) in [-1, 1] -> 10 logits; ``features`` gives the 128-d penultimate layer."""

    arch = DIGIT
    resolution = 28

    def __init__(self, num_classes: int = 10, channels: int = 1) -> None:
        super().__init__()
        self.num_classes, self.channels = num_classes, channels

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(channels, 32), nn.MaxPool2d(2),  # (B, 32, 14, 14)
            *block(32, 64), nn.MaxPool2d(2),  # (B, 64, 7, 7)
            nn.Flatten(), nn.Dropout(0.25),
            nn.Linear(64 * 7 * 7, 128, bias=False), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(128, num_classes)

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def config(self) -> dict:
        return {"arch": DIGIT, "num_classes": self.num_classes, "channels": self.channels, "resolution": 28}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 28:
            x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


ARCHS = (DIGIT, RESNET)


def build_classifier(config: dict) -> nn.Module:
    """An untrained network from a saved configuration (``arch`` absent: a digit CNN, as saved before
    there were others)."""
    arch = config.get("arch", DIGIT)
    if arch == DIGIT:
        return DigitClassifier(int(config["num_classes"]), int(config["channels"]))
    if arch == RESNET:
        return ResNetClassifier(int(config["num_classes"]), int(config["channels"]), width=int(config["width"]),
                                resolution=int(config["resolution"]))
    raise DataError(f"unknown classifier architecture {arch!r}; this atelier knows {', '.join(ARCHS)}")


@dataclass
class FittedClassifier:
    model: nn.Module  # DigitClassifier or ResNetClassifier, in eval mode
    test_accuracy: float  # on the held-out split
    sha256: str  # of the weights (weights_sha256)
    info: dict = field(default_factory=dict)  # what it was trained on and how (saved with it)


def _shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translations by up to ``max_shift`` pixels (padding with background -1)."""
    pad = F.pad(x, [max_shift] * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2,), generator=g).tolist()
    return pad[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000, features: bool = False) -> torch.Tensor:
    """Logits (or features) for uint8 or [-1, 1] images, in eval mode, batched."""
    model.eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size]
        x = to_float(x) if x.dtype == torch.uint8 else x.float()
        out.append(model.features(x) if features else model(x))
    return torch.cat(out)


def accuracy(model: nn.Module, data: ImageDataset) -> float:
    return float((predict(model, data.images).argmax(1) == data.labels).float().mean())


def _check_labelled(train: ImageDataset, test: ImageDataset) -> None:
    for part, what in ((train, "training"), (test, "held-out")):
        if part.labels is None or len(part) == 0:
            raise DataError(f"{part.name}: a classifier needs labelled {what} images")
    if train.num_classes < 2:
        raise DataError(f"{train.name}: a classifier needs at least two classes, found {train.num_classes}")


def fit_classifier(train: ImageDataset, test: ImageDataset, *, arch: str = DIGIT, epochs: int = 3,
                   batch_size: int = 128, lr: float | None = None, width: int = 16, seed: int = 0,
                   progress: bool = True) -> FittedClassifier:
    """Train a classifier on ``train`` and measure its accuracy on ``test`` (uint8 images, labelled).

    ``digit-cnn``: Adam (``lr`` default 2e-3), a one-cycle schedule, random shifts of up to 2 px.
    ``resnet9``: SGD with Nesterov momentum 0.9 and weight decay 5e-4 (``lr`` default 0.2 at batch 256,
    scaled with the batch), a one-cycle schedule, label smoothing 0.1, random crops (padding 4) and
    flips; it runs at the images' resolution (``width`` sets the channels: features are 8 * width).
    Each epoch is a seeded permutation of the training images, the last partial batch left out.
    Reproducible from ``seed`` for a given torch build and thread count."""
    if arch not in ARCHS:
        raise ValueError(f"unknown classifier architecture {arch!r}; choose from {', '.join(ARCHS)}")
    _check_labelled(train, test)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    batch_size = max(1, min(batch_size, len(train)))
    per_epoch = len(train) // batch_size
    steps = epochs * per_epoch
    if steps < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if arch == DIGIT:
        model: nn.Module = DigitClassifier(train.num_classes, train.channels)
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr or 2e-3)
        augment, smoothing = _shift, 0.0
    else:
        model = ResNetClassifier(train.num_classes, train.channels, width=width, resolution=train.resolution)
        model = model.to(memory_format=torch.channels_last)
        lr = lr or 0.2 * batch_size / 256
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
        augment, smoothing = crop_flip, 0.1
    max_lr = opt.param_groups[0]["lr"]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=steps)
    bar = tqdm(total=steps, desc=f"fit classifier ({arch})", disable=not progress)
    for _ in range(epochs):
        perm = torch.randperm(len(train), generator=g)
        model.train()
        for i in range(per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            x = augment(to_float(train.images[idx]), g)
            loss = F.cross_entropy(model(x), train.labels[idx], label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model.eval()
    info = {"epochs": epochs, "steps": steps, "batch_size": batch_size, "seed": seed, "n_train": len(train),
            "n_test": len(test), "classes": list(train.classes or []), "torch_threads": torch.get_num_threads()}
    acc = accuracy(model, test)
    info["fit_seconds"] = round(time.perf_counter() - t0, 1)
    return FittedClassifier(model, acc, weights_sha256(model), info)


def weights_sha256(model: nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def classifier_path(name: str) -> Path:
    """Where the classifier ``name`` is cached (a ``:`` in the name becomes ``-`` in the file name)."""
    return cache_dir() / "classifiers" / f"{name.replace(':', '-')}.safetensors"


def save_classifier(fitted: FittedClassifier, name: str) -> Path:
    from atelier.io import atomic_write_json, save_tensors

    path = classifier_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(fitted.model.state_dict(), path)
    meta = {**fitted.info, **fitted.model.config(), "name": name, "test_accuracy": fitted.test_accuracy,
            "sha256": fitted.sha256}
    atomic_write_json(path.with_suffix(".json"), meta)  # written last: a classifier without it is not there
    return path


def load_classifier(name: str) -> FittedClassifier | None:
    """The cached classifier ``name``, or None when it has not been fitted yet. DataError when its
    weights no longer have the hash they were saved with."""
    from atelier.io import load_json, load_tensors

    path = classifier_path(name)
    if not path.is_file() or not path.with_suffix(".json").is_file():
        return None
    meta = load_json(path.with_suffix(".json"))
    model = build_classifier(meta)
    model.load_state_dict(load_tensors(path, what=f"the {name} classifier"))
    digest = weights_sha256(model)
    if meta.get("sha256", digest) != digest:
        raise DataError(f"{path}: the weights of the cached {name} classifier have changed since they were fitted "
                        f"(sha256 {digest[:12]}, saved as {meta['sha256'][:12]}); delete the file and fit it again")
    info = {k: v for k, v in meta.items() if k not in ("test_accuracy", "sha256")}
    return FittedClassifier(model.eval(), meta["test_accuracy"], digest, info)


# ------------------------------------------------------------------------------- domain classifiers

#: Datasets that have a domain classifier, and the cache name of each classifier.
DOMAIN_CLASSIFIERS = {"mnist": "mnist-cnn", "digits": "digits-cnn", "cifar10": "cifar10-cnn"}
#: CIFAR-10's classes in label order (alphabetical, so a folder of class folders has the same order).
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
#: cifar10-cnn's training: epochs and batch (80% held-out accuracy in 6 CPU-minutes on one thread; see the README).
CIFAR10_EPOCHS, CIFAR10_BATCH = 4, 256


def _cifar10_split(split: str, data_dir: str | None, progress: bool) -> ImageDataset:
    """CIFAR-10 from the ``cifar10`` reader: the official archive, or with ``data_dir`` a tree of class
    folders under train/ and test/ (such as the JPEG re-encoding), whose classes must be CIFAR-10's."""
    from atelier.data import load_dataset

    data = load_dataset("cifar10", resolution=32, split=split, data_dir=data_dir, progress=progress)
    if data.meta.get("format") == "image folder":
        data.meta["cifar10_source"] = f"image folder {data.meta['source']}"
    return data


def fit_domain_classifier(dataset: str, *, data_dir: str | None = None, seed: int = 0, min_steps: int = 600,
                          epochs: int | None = None, progress: bool = True) -> FittedClassifier:
    """Fit the domain classifier of ``dataset`` (a key of :data:`DOMAIN_CLASSIFIERS`) on its training
    split, measure it on the test split and save it in the cache (``$ATELIER_HOME/classifiers``).

    mnist/digits: a digit CNN at 28x28; unless ``epochs`` is given, training lasts at least
    ``min_steps`` steps (3 epochs on MNIST, 55 on the 1,438 training digits). cifar10: a ResNet-9 at
    32x32 for :data:`CIFAR10_EPOCHS` epochs; ``data_dir`` may hold the official archive or a
    train/test tree of class folders (see :func:`_cifar10_split`)."""
    from atelier.data import load_dataset

    if dataset not in DOMAIN_CLASSIFIERS:
        raise ValueError(f"no domain classifier for {dataset!r}; there is one for {sorted(DOMAIN_CLASSIFIERS)} "
                         "(a labelled image folder: fit one with `atelier metrics fit-classifier --data folder:PATH`; "
                         "other data: use the inception-v3 extractor)")
    if dataset == "cifar10":
        train, test = (_cifar10_split(s, data_dir, progress) for s in ("train", "test"))
        fitted = fit_classifier(train, test, arch=RESNET, epochs=epochs or CIFAR10_EPOCHS, batch_size=CIFAR10_BATCH,
                                seed=seed, progress=progress)
        fitted.info["trained_on"] = train.meta.get("cifar10_source", "cifar10 (official binary archive)")
    else:
        train = load_dataset(dataset, resolution=28, split="train", data_dir=data_dir, progress=progress)
        test = load_dataset(dataset, resolution=28, split="test", data_dir=data_dir, progress=progress)
        epochs = epochs or max(3, -(-min_steps // max(1, len(train) // 128)))
        fitted = fit_classifier(train, test, epochs=epochs, seed=seed, progress=progress)
        fitted.info["trained_on"] = dataset
    fitted.info["dataset"] = dataset
    save_classifier(fitted, DOMAIN_CLASSIFIERS[dataset])
    return fitted
