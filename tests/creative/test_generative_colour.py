"""Generative augmentation on colour models: classifier files of every saved architecture, default classifiers."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from atelier.creative.generative import _load_classifier_file, generate_labelled, resolve_classifier
from atelier.data import DataError
from atelier.metrics.classifier import (DigitClassifier, FittedClassifier, classifier_path, predict, save_classifier,
                                        weights_sha256)
from atelier.metrics.colour_classifier import ResNetClassifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class NoisyColourGenerator(torch.nn.Module):
    """A class-conditional 'GAN' whose samples are uniform colour noise (an untrained one draws near-constant
    grey, which any classifier puts in one class)."""

    family, conditional = "gan", True
    config = SimpleNamespace(num_classes=10, resolution=32, channels=3)

    def sample(self, n, *, labels=None, generator=None, truncation=None) -> torch.Tensor:
        return torch.rand(n, 3, 32, 32, generator=generator) * 2 - 1  # (n, 3, 32, 32) in [-1, 1]


def _saved(model: torch.nn.Module, name: str) -> Path:
    return save_classifier(FittedClassifier(model.eval(), 0.5, weights_sha256(model), {"trained_on": "test"}), name)


@pytest.fixture
def colour_classifier(atelier_home) -> tuple[ResNetClassifier, Path]:
    torch.manual_seed(0)
    model = ResNetClassifier(10, 3, width=4, resolution=32)
    return model, _saved(model, "colour-test")


def test_a_colour_classifier_file_is_rebuilt_with_its_own_architecture(colour_classifier) -> None:
    model, path = colour_classifier
    judge = _load_classifier_file(path, "cpu")
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    out = judge(images)
    assert out.logits.shape == (6, 10) and out.features.shape == (6, 32)  # 8 x width features
    assert torch.allclose(out.logits, predict(model, images), atol=1e-5)
    assert judge.test_accuracy == 0.5 and judge.sha256 == weights_sha256(model)


def test_a_digit_classifier_file_still_loads(atelier_home) -> None:
    torch.manual_seed(1)
    model = DigitClassifier(10, 1)
    judge = _load_classifier_file(_saved(model, "digit-test"), "cpu")
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert torch.allclose(judge(images).logits, predict(model, images), atol=1e-5)


def test_a_classifier_file_that_does_not_match_its_description_is_refused(colour_classifier) -> None:
    _, path = colour_classifier
    meta = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**meta, "width": 8}))  # another network's shapes
    with pytest.raises(DataError, match="do not fit the resnet9 classifier"):
        _load_classifier_file(path, "cpu")
    path.with_suffix(".json").write_text(json.dumps({**meta, "sha256": "0" * 64}))
    with pytest.raises(DataError, match="changed since they were saved"):
        _load_classifier_file(path, "cpu")
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="colour-test.json beside them"):
        _load_classifier_file(path, "cpu")


def test_generative_augmentation_filters_a_colour_gan_with_a_colour_classifier_file(colour_classifier,
                                                                                      tmp_path) -> None:
    from PIL import Image

    model, _ = colour_classifier
    gan = NoisyColourGenerator()
    with torch.no_grad():  # an untrained network calls everything one class: spread its logits over the samples'
        feats = predict(model, gan.sample(200, generator=torch.Generator().manual_seed(9)), features=True)
        model.head.weight.copy_(torch.randn(10, feats.shape[1]) / feats.std(0).clamp_min(1e-6))
        model.head.bias.copy_(-model.head.weight @ feats.mean(0))
    path = _saved(model, "colour-spread")
    gen = generate_labelled(gan, 2, min_confidence=0.0, classifier=str(path), seed=0, max_oversample=500,
                            out_dir=tmp_path / "gen")
    assert gen.images.shape == (20, 3, 32, 32) and gen.images.dtype == torch.uint8
    assert gen.info["classifier"] == str(path)
    judge = _load_classifier_file(path, "cpu")
    probs = judge(gen.images).logits.softmax(1)
    assert (probs.argmax(1) == gen.labels).all()  # every kept sample is of the class it was drawn for
    assert torch.allclose(gen.confidence, probs[torch.arange(20), gen.labels], atol=1e-5)
    with Image.open(tmp_path / "gen" / "9" / "gen_00001.png") as image:
        assert image.mode == "RGB" and image.size == (32, 32)


def test_the_default_classifier_of_colour_data(atelier_home, tmp_path) -> None:
    _saved(ResNetClassifier(10, 3, width=4), "cifar10-cnn")  # as if fitted: nothing is trained here
    judge, name = resolve_classifier(None, "cifar10")
    assert name == "cifar10-cnn" and judge.channels == 3
    folder = tmp_path / "photos"
    for c in ("cats", "dogs"):
        (folder / c).mkdir(parents=True)
    with pytest.raises(ValueError, match=f"fit-classifier --data folder:{folder}"):
        resolve_classifier(None, f"folder:{folder}")
    with pytest.raises(ValueError, match="cifar10-cnn"):
        resolve_classifier("inception-v3", "cifar10")
    assert classifier_path("cifar10-cnn").is_file()
