"""``atelier metrics fit-classifier --data folder:PATH``, the cache hit, and evaluation against a folder:
with its fitted extractor, or refused when there is neither a fitted extractor nor InceptionV3 weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atelier.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")
COLOURS = {"cyan": (0, 200, 220), "magenta": (210, 0, 200), "yellow": (230, 220, 0)}


def write_folder(root: Path, per_class: int, labelled: bool = True) -> Path:
    """Coloured squares on grey, one class folder per colour (or all directly in ``root``)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for name, colour in COLOURS.items():
        where = root / name if labelled else root
        where.mkdir(exist_ok=True)
        for i in range(per_class):
            img = np.full((32, 32, 3), rng.integers(60, 200), np.uint8)
            y, x = rng.integers(0, 16, 2)
            img[y : y + 14, x : x + 14] = colour
            Image.fromarray(img).save(where / f"{name}{i:02d}.png")
    return root


def write_samples(path: Path, n: int = 30) -> Path:
    rng = np.random.default_rng(1)
    np.savez(path, images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
    return path


def test_fit_classifier_on_a_folder_then_evaluate_with_it(tmp_path: Path, atelier_home: Path, capsys) -> None:
    folder = write_folder(tmp_path / "shapes", 20)
    args = ["metrics", "fit-classifier", "--data", f"folder:{folder}", "--epochs", "10", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    name = out.split(":")[0] + ":" + out.split(":")[1]
    assert name.startswith("folder-cnn:") and "held-out accuracy" in out and "fitted in" in out
    assert f"evaluation against --data folder:{folder} now uses it by default" in out
    assert main(args) == 0
    again = capsys.readouterr().out
    assert again.startswith(name + ":") and "found in the cache, nothing trained" in again
    assert main(["metrics", "extractors"]) == 0
    assert f"{name}" in capsys.readouterr().out
    samples = write_samples(tmp_path / "samples.npz")
    assert main(["evaluate", str(samples), "--data", f"folder:{folder}", "--split", "train", "--metrics", "fid,kid,pr",
                 "--out", str(tmp_path / "eval"), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert f"extractor {name} (" in table and "held-out accuracy" in table and "fid" in table


def test_fit_classifier_refuses_an_unlabelled_folder(tmp_path: Path, atelier_home: Path, capsys) -> None:
    flat = write_folder(tmp_path / "flat", 3, labelled=False)
    assert main(["metrics", "fit-classifier", "--data", f"folder:{flat}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "atelier: error: fit-classifier needs class sub-folders" in err and str(flat) in err
    assert main(["metrics", "fit-classifier", "--data", "imagenet", "--quiet"]) == 2
    assert "fit-classifier takes mnist, digits, cifar10 or folder:PATH" in capsys.readouterr().err


@pytest.mark.parametrize("labelled", [True, False])
def test_evaluate_stops_without_labels_fit_or_inception_weights(tmp_path: Path, atelier_home: Path, capsys,
                                                                labelled: bool) -> None:
    folder = write_folder(tmp_path / "real", 3, labelled=labelled)
    samples = write_samples(tmp_path / "samples.npz")
    out = tmp_path / "eval"
    assert main(["evaluate", str(samples), "--data", f"folder:{folder}", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"atelier: error: no feature extractor that means anything for folder:{folder}")
    assert f"atelier metrics fit-classifier --data folder:{folder}" in err  # way out 1
    assert "--inception-weights PATH" in err and "--extractor inception-v3" in err  # way out 2
    assert "pt_inception-2015-12-05-6726825d.pth" in err and "nothing was computed" in err
    assert ("3 class sub-folders (cyan, magenta, yellow)" in err) == labelled
    assert ("it has no class sub-folders" in err) == (not labelled)
    assert not out.exists()
