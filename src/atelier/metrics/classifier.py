"""A small CNN digit classifier: the domain feature extractor for MNIST-like data.

Inception features say little about 28x28 digits; a classifier trained on the data itself is the
standard domain extractor for MNIST (its 128-d penultimate layer gives the Fréchet distance, its
softmax the class coverage of generated samples). Weights are stored as safetensors in the cache
with the test accuracy, and identified by a SHA-256 of their bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from atelier.data import ImageDataset, cache_dir, to_float


class DigitClassifier(nn.Module):
    """(B, 1, 28, 28) in [-1, 1] -> 10 logits; ``features`` gives the 128-d penultimate layer."""

    def __init__(self, num_classes: int = 10, channels: int = 1) -> None:
        super().__init__()

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(channels, 32), nn.MaxPool2d(2),  # (B, 32, 14, 14)
            *block(32, 64), nn.MaxPool2d(2),  # (B, 64, 7, 7)
            nn.Flatten(), nn.Dropout(0.25),
            nn.Linear(64 * 7 * 7, 128, bias=False), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 28:
            x = F.interpolate(x, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class FittedClassifier:
    model: DigitClassifier
    test_accuracy: float
    sha256: str


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


def fit_classifier(train: ImageDataset, test: ImageDataset, *, epochs: int = 3, batch_size: int = 128,
                   lr: float = 2e-3, seed: int = 0, progress: bool = True) -> FittedClassifier:
    """Train with Adam, a one-cycle schedule and small random shifts; report test accuracy."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitClassifier(train.num_classes, train.channels)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * (len(train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    bar = tqdm(total=steps, desc="fit classifier", disable=not progress)
    for _ in range(epochs):
        perm = torch.randperm(len(train), generator=g)
        model.train()
        for i in range(len(train) // batch_size):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            x = _shift(to_float(train.images[idx]), g)
            loss = F.cross_entropy(model(x), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    return FittedClassifier(model.eval(), accuracy(model, test), weights_sha256(model))


def weights_sha256(model: nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def classifier_path(name: str) -> Path:
    return cache_dir() / "classifiers" / f"{name}.safetensors"


def save_classifier(fitted: FittedClassifier, name: str) -> Path:
    from atelier.io import atomic_write_json, save_tensors

    path = classifier_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(fitted.model.state_dict(), path)
    meta = {"test_accuracy": fitted.test_accuracy, "sha256": fitted.sha256,
            "num_classes": fitted.model.head.out_features, "channels": fitted.model.body[0].in_channels}
    atomic_write_json(path.with_suffix(".json"), meta)
    return path


#: Datasets that have a domain classifier, and the cache name of each classifier.
DOMAIN_CLASSIFIERS = {"mnist": "mnist-cnn", "digits": "digits-cnn"}


def fit_domain_classifier(dataset: str, *, data_dir: str | None = None, seed: int = 0, min_steps: int = 600,
                          progress: bool = True) -> FittedClassifier:
    """Fit the domain classifier of ``dataset`` ("mnist" or "digits") on its training split at 28x28,
    measure it on the test split and save it in the cache (``$ATELIER_HOME/classifiers``).

    Epochs are chosen so that training lasts at least ``min_steps`` steps (3 epochs on MNIST, 55 on
    the 1,438 training digits)."""
    from atelier.data import load_dataset

    if dataset not in DOMAIN_CLASSIFIERS:
        raise ValueError(f"no domain classifier for {dataset!r}; there is one for {sorted(DOMAIN_CLASSIFIERS)} "
                         "(other data: use the inception-v3 extractor)")
    train = load_dataset(dataset, resolution=28, split="train", data_dir=data_dir, progress=progress)
    test = load_dataset(dataset, resolution=28, split="test", data_dir=data_dir, progress=progress)
    epochs = max(3, -(-min_steps // max(1, len(train) // 128)))
    fitted = fit_classifier(train, test, epochs=epochs, seed=seed, progress=progress)
    save_classifier(fitted, DOMAIN_CLASSIFIERS[dataset])
    return fitted


def load_classifier(name: str) -> FittedClassifier | None:
    """The cached classifier ``name``, or None when it has not been fitted yet."""
    from atelier.io import load_tensors

    path = classifier_path(name)
    if not path.is_file() or not path.with_suffix(".json").is_file():
        return None
    meta = json.loads(path.with_suffix(".json").read_text())
    model = DigitClassifier(meta["num_classes"], meta["channels"])
    model.load_state_dict(load_tensors(path))
    return FittedClassifier(model.eval(), meta["test_accuracy"], weights_sha256(model))
