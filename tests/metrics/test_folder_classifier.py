"""Domain extractors fitted for labelled image folders (and cifar10-cnn): fit, cache hit, content key,
provenance, refusal on unlabelled data, and the default extractor evaluation picks."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.data import DataError, ImageDataset
from atelier.metrics import EvalConfig, Evaluator, default_extractor, load_extractor
from atelier.metrics import classifier as classifier_module
from atelier.metrics import folder_classifier as folder_module
from atelier.metrics.classifier import CIFAR10_CLASSES, fit_domain_classifier, load_classifier
from atelier.metrics.colour_classifier import ResNetClassifier, crop_flip
from atelier.metrics.extractors import choose_extractor
from atelier.metrics.folder_classifier import (PREFIX, extractor_name, find_folder_extractor, fit_folder_classifier,
                                               holdout_split)

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 60, 230)}
FIT = {"epochs": 12, "batch_size": 16}  # a few seconds on one core


def square(rng: np.random.Generator, colour: tuple[int, int, int], size: int = 32) -> np.ndarray:
    """A coloured square of random size and place on a random grey background, with pixel noise."""
    img = np.full((size, size, 3), rng.integers(60, 200), dtype=np.int16)
    side = int(rng.integers(10, 20))
    y, x = rng.integers(0, size - side, 2)
    img[y : y + side, x : x + side] = colour
    img += rng.integers(-20, 21, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def write_squares(root: Path, per_class: int, seed: int = 0, classes=COLOURS) -> Path:
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(square(rng, colour)).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def fitted_home(tmp_path_factory):
    """An ATELIER_HOME with the extractor fitted for a folder of 3 classes x 24 coloured squares."""
    root = tmp_path_factory.mktemp("folder_cls")
    folder = write_squares(root / "squares", 24)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATELIER_HOME", str(root / "home"))
        t0 = time.perf_counter()
        fit = fit_folder_classifier(folder, progress=False, **FIT)
        seconds = time.perf_counter() - t0
        yield folder, fit, seconds
    torch.set_num_threads(before)


@pytest.fixture
def home(fitted_home, monkeypatch):
    folder, fit, seconds = fitted_home
    monkeypatch.setenv("ATELIER_HOME", str(folder.parent / "home"))
    return folder, fit, seconds


def test_resnet_shapes_and_augmentation() -> None:
    net = ResNetClassifier(5, 3, width=8, resolution=32).eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert net.features(torch.randn(2, 3, 48, 48)).shape == (2, 64)  # other sizes are resized first
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = crop_flip(x, g, pad=2)
    assert out.shape == x.shape
    for i in range(2):  # every output is a crop of the zero-padded image, possibly mirrored
        padded = torch.nn.functional.pad(x[i], [2] * 4)
        crops = [padded[:, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)


def test_fit_reaches_high_accuracy_and_is_cached(home) -> None:
    folder, fit, seconds = home
    assert not fit.cached and fit.name.startswith(PREFIX) and len(fit.name) == len(PREFIX) + 12
    assert fit.fitted.test_accuracy >= 0.8, fit.fitted.test_accuracy  # 6 held-out squares (2 per class)
    assert fit.path.is_file() and fit.path.with_suffix(".json").is_file()
    assert fit.fitted.info["n_train"] == 66 and fit.fitted.info["n_test"] == 6
    assert seconds < 60


def test_second_fit_is_a_cache_hit(home, monkeypatch) -> None:
    folder, fit, _ = home

    def no_training(*args, **kwargs):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(folder_module, "fit_classifier", no_training)
    again = fit_folder_classifier(folder, progress=False, **FIT)
    assert again.cached and again.name == fit.name and again.fitted.sha256 == fit.fitted.sha256
    assert again.fitted.test_accuracy == fit.fitted.test_accuracy
    with pytest.raises(AssertionError, match="must not train"):
        fit_folder_classifier(folder, progress=False, refit=True, **FIT)


def test_the_key_follows_content_and_resolution(home, tmp_path) -> None:
    folder, fit, _ = home
    copy = write_squares(tmp_path / "copy", 24)  # the same bytes under the same names elsewhere
    assert find_folder_extractor(copy) == fit.name  # keyed by content, not by path
    changed = write_squares(tmp_path / "changed", 24)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(changed / "red" / "extra.png")
    assert find_folder_extractor(changed) is None
    content = folder_module.scan_folder(changed)
    assert extractor_name(folder_module.content_sha256(content), 32) != fit.name
    assert extractor_name(fit.fitted.info["content_sha256"], 64) != fit.name
    assert extractor_name(fit.fitted.info["content_sha256"], 32) == fit.name


def test_provenance_names_accuracy_and_hashes(home) -> None:
    folder, fit, _ = home
    ex = load_extractor(fit.name)
    p = ex.provenance()
    assert p["extractor"] == fit.name and p["extractor_sha256"] == fit.fitted.sha256
    assert len(p["extractor_sha256"]) == 64
    assert p["classifier_test_accuracy"] == fit.fitted.test_accuracy
    assert p["classifier_content_sha256"] == folder_module.content_sha256(folder_module.scan_folder(folder))
    assert p["feature_dim"] == 128 and "32x32" in p["resize"]
    out = ex(torch.randint(0, 256, (4, 1, 40, 40), dtype=torch.uint8))  # any size and channel count
    assert out.features.shape == (4, 128) and out.logits.shape == (4, 3)
    with pytest.raises(DataError, match="not in the cache"):
        load_extractor("folder-cnn:0123456789ab")
    with pytest.raises(ValueError, match="12 hex digits"):
        load_extractor("folder-cnn:../../x")


def test_evaluation_uses_the_fitted_extractor_by_default(home) -> None:
    folder, fit, _ = home
    assert default_extractor(f"folder:{folder}") == fit.name
    ev = Evaluator(EvalConfig(data=f"folder:{folder}", split="train", metrics=("fid", "kid", "pr"),
                              kid_subset_size=20, kid_subsets=5), resolution=32, progress=False)
    assert ev.extractor.name == fit.name
    result = ev.evaluate(ev.real.images[:40])
    assert result.provenance["extractor"] == fit.name and f"extractor {fit.name}" in result.table()
    assert "held-out accuracy" in result.table() and result.metrics["fid"] >= 0


def test_unlabelled_folders_are_refused(tmp_path, atelier_home) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(square(rng, (200, 0, 0))).save(flat / f"{i}.png")
    with pytest.raises(DataError, match="fit-classifier needs class sub-folders"):
        fit_folder_classifier(flat, progress=False)
    one = write_squares(tmp_path / "one", 4, classes={"red": (200, 0, 0)})
    with pytest.raises(DataError, match="fit-classifier needs class sub-folders.*only the class 'red'"):
        fit_folder_classifier(one, progress=False)
    assert not (atelier_home / "classifiers").exists() or not any((atelier_home / "classifiers").iterdir())


def test_no_extractor_and_no_inception_weights_is_refused(tmp_path, atelier_home) -> None:
    labelled = write_squares(tmp_path / "labelled", 3)
    with pytest.raises(DataError) as err:
        choose_extractor(f"folder:{labelled}")
    text = str(err.value)
    assert f"atelier metrics fit-classifier --data folder:{labelled}" in text and "3 class sub-folders" in text
    assert "inception_weights=PATH" in text and 'extractor="inception-v3"' in text
    weights = atelier_home / "weights" / "pt_inception-2015-12-05-6726825d.pth"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"stand-in")  # weights at hand: InceptionV3 stays the choice
    assert choose_extractor(f"folder:{labelled}") == "inception-v3"
    assert choose_extractor("cifar10") == "cifar10-cnn" and choose_extractor("mnist") == "mnist-cnn"


def test_holdout_is_stratified_and_fixed() -> None:
    labels = torch.tensor([0] * 20 + [1] * 10 + [2] * 3)
    data = ImageDataset(torch.zeros(33, 1, 4, 4, dtype=torch.uint8), labels, ["a", "b", "c"], "t")
    train, test = holdout_split(data)
    again_train, again_test = holdout_split(data)
    assert torch.equal(test.labels, again_test.labels) and len(train) + len(test) == 33
    assert test.labels.bincount().tolist() == [2, 1, 1]
    with pytest.raises(DataError, match="class 'c' has 1 image"):
        holdout_split(ImageDataset(data.images[:31], labels[:31], ["a", "b", "c"], "t"))


def test_cifar10_default_and_fit_from_what_load_dataset_gives(atelier_home, monkeypatch) -> None:
    assert default_extractor("cifar10") == "cifar10-cnn" and default_extractor("cifar10:train") == "cifar10-cnn"
    rng = np.random.default_rng(0)
    colours = [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(10)]

    def fake_cifar10(spec, *, resolution, split, data_dir=None, progress=True, **_):
        assert spec == "cifar10" and resolution == 32 and data_dir == "archive-dir"
        n = 8 if split == "train" else 2
        labels = torch.arange(10).repeat_interleave(n)
        images = torch.from_numpy(np.stack([square(rng, colours[c]) for c in labels.tolist()])).permute(0, 3, 1, 2)
        return ImageDataset(images.contiguous(), labels, list(CIFAR10_CLASSES), f"cifar10:{split}")

    monkeypatch.setattr("atelier.data.load_dataset", fake_cifar10)
    fitted = fit_domain_classifier("cifar10", data_dir="archive-dir", epochs=2, progress=False)
    assert isinstance(fitted.model, ResNetClassifier) and fitted.model.resolution == 32
    loaded = load_classifier("cifar10-cnn")
    assert loaded.sha256 == fitted.sha256 and loaded.info["trained_on"].startswith("cifar10")
    assert load_extractor("cifar10-cnn", fit=False).provenance()["classifier_test_accuracy"] == fitted.test_accuracy


def test_cifar10_from_a_class_folder_tree_checks_the_classes(tmp_path, atelier_home) -> None:
    tree = tmp_path / "cifar10"
    for split, n in (("train", 2), ("test", 1)):
        write_squares(tree / split, n, classes={c: (i * 25, 100, 200 - i * 20) for i, c in enumerate(CIFAR10_CLASSES)})
    fitted = fit_domain_classifier("cifar10", data_dir=str(tree), epochs=1, progress=False)
    assert fitted.info["n_train"] == 20 and fitted.info["trained_on"] == f"image folder {tree}"
    (tree / "train" / "truck").rename(tree / "train" / "lorry")
    with pytest.raises(DataError, match="not CIFAR-10's"):
        fit_domain_classifier("cifar10", data_dir=str(tree), epochs=1, progress=False)


def test_a_changed_cached_classifier_is_refused(home) -> None:
    folder, fit, _ = home
    meta = fit.path.with_suffix(".json")
    text = meta.read_text()
    try:
        meta.write_text(text.replace(fit.fitted.sha256, "0" * 64))
        with pytest.raises(DataError, match="have changed since they were fitted"):
            load_classifier(fit.name)
    finally:
        meta.write_text(text)
    assert classifier_module.load_classifier(fit.name).sha256 == fit.fitted.sha256


def test_resnet_fit_is_reproducible_from_its_seed() -> None:
    rng = np.random.default_rng(3)
    labels = torch.arange(3).repeat(8)
    images = torch.from_numpy(np.stack([square(rng, list(COLOURS.values())[c]) for c in labels.tolist()]))
    data = ImageDataset(images.permute(0, 3, 1, 2).contiguous(), labels, list(COLOURS), "squares")
    runs = [classifier_module.fit_classifier(data, data, arch="resnet9", epochs=2, batch_size=8, width=4, seed=s,
                                             progress=False) for s in (0, 0, 1)]
    assert runs[0].sha256 == runs[1].sha256 != runs[2].sha256
