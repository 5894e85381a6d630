"""The rest of Atelier on a colour, class-conditional CIFAR-10 model, end to end.

A tiny CIFAR-10-format tree (``train/`` and ``test/`` of the ten class folders, a few coloured PNGs each)
trains a tiny class-conditional 3-channel model for two steps through the CLI, for every GAN family that
handles 32 px colour; then sampling, interpolation and class morphs, and the studio's listing and
generation routes, must give RGB images and name the classes airplane, automobile, ... (not 0..9).
"""

from __future__ import annotations

import importlib
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.data.cifar10 import CLASSES
from atelier.models.registry import list_families

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: The smallest class-conditional colour run of each GAN family (resnet-gan once it is registered).
TINY = {
    "gan": ["--g-width", "8", "--d-width", "8", "--latent-dim", "8"],
    "resnet-gan": ["--g-width", "8", "--d-width", "8", "--latent-dim", "8", "--n-dis", "1"],
}
importlib.import_module("atelier.train")  # registers every family
FAMILIES = [f for f in TINY if f in list_families()]
assert "gan" in FAMILIES  # the registry was filled (the test would otherwise pass on nothing)


def make_cifar_tree(root: Path, per_class: dict[str, int], size: int = 32) -> Path:
    """``root/{train,test}/<CIFAR-10 class>/NNNN.png``: noisy images of one hue per class."""
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            hue = np.array([25 * c, 255 - 25 * c, (80 * c) % 256], dtype=float)
            for i in range(n):
                pixels = np.clip(hue + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_cifar_tree(tmp_path_factory.mktemp("cifar") / "cifar10", {"train": 2, "test": 1})


@pytest.fixture(scope="module", params=FAMILIES)
def run(request, tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(f"run-{request.param}") / "run"
    assert main(["train", request.param, "--conditional", "--data", "cifar10", "--data-dir", str(tree),
                 "--resolution", "32", "--batch-size", "8", *TINY[request.param], "--steps", "2", "--no-progress",
                 "--no-tensorboard", "--out", str(out)]) == 0
    return out


def _image(path_or_bytes) -> Image.Image:
    image = Image.open(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes)
    image.load()
    return image


def test_the_model_is_colour_and_knows_the_class_names(run) -> None:
    from atelier.pipelines import Pipeline

    pipe = Pipeline.load(run)
    assert pipe.model.config.channels == 3 and pipe.model.config.resolution == 32
    assert pipe.class_names == list(CLASSES)
    assert pipe.class_index("ship") == 8 and pipe.class_index("3") == 3 and pipe.class_index(9) == 9
    with pytest.raises(ValueError, match="airplane, automobile"):
        pipe.class_index("zebra")
    images = pipe.sample(10, seed=0)
    assert images.shape == (10, 3, 32, 32) and images.dtype == torch.uint8
    # the colour planes differ: not a grey image repeated three times
    assert not torch.equal(images[:, 0], images[:, 1])


def test_sample_writes_an_rgb_grid_and_class_named_folders(run, tmp_path, capsys) -> None:
    grid = tmp_path / "grid.png"
    assert main(["sample", str(run), "--n", "20", "--out", str(grid), "--quiet"]) == 0
    image = _image(grid)
    assert image.mode == "RGB" and image.size[0] > image.size[1]  # 10 columns (one per class), 2 rows
    folder = tmp_path / "samples"
    assert main(["sample", str(run), "--n", "20", "--out", str(folder), "--quiet"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(CLASSES)
    one = next((folder / "ship").iterdir())
    assert _image(one).mode == "RGB" and _image(one).size == (32, 32)
    assert main(["sample", str(run), "--n", "4", "--label", "8", "--out", str(tmp_path / "ships"), "--quiet"]) == 0
    assert [p.name for p in (tmp_path / "ships").iterdir()] == ["ship"]
    assert main(["sample", str(run), "--n", "4", "--label", "truck", "--out", str(tmp_path / "trucks"), "--quiet"]) == 0
    assert [p.name for p in (tmp_path / "trucks").iterdir()] == ["truck"]
    assert main(["sample", str(run), "--n", "4", "--label", "unicorn", "--out", str(tmp_path / "no")]) == 2
    assert "'unicorn' is not a class of this model" in capsys.readouterr().err


def test_explore_interpolates_and_morphs_classes_by_name(run, tmp_path, capsys) -> None:
    morph = tmp_path / "morph.png"
    assert main(["explore", "interpolate", str(run), "--classes", "airplane", "ship", "--steps", "5",
                 "--out", str(morph)]) == 0
    assert "classes airplane -> ship" in capsys.readouterr().out
    strip = _image(morph)
    assert strip.mode == "RGB" and strip.size[0] > 4 * strip.size[1]  # five frames in a row
    with Image.open(morph.with_suffix(".gif")) as gif:
        assert gif.n_frames > 1 and gif.convert("RGB").getcolors(1 << 16) is not None
    assert main(["explore", "interpolate", str(run), "--classes", "0", "9", "--steps", "3", "--no-gif",
                 "--out", str(tmp_path / "by_index.png")]) == 0
    assert "classes airplane -> truck" in capsys.readouterr().out
    assert main(["explore", "interpolate", str(run), "--seeds", "0", "1", "--label", "cat", "--steps", "3",
                 "--no-gif", "--out", str(tmp_path / "seeds.png")]) == 0
    assert "class cat" in capsys.readouterr().out and _image(tmp_path / "seeds.png").mode == "RGB"
    assert main(["explore", "interpolate", str(run), "--classes", "airplane", "zebra", "--out",
                 str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "'zebra' is not a class" in err and "airplane" in err and not (tmp_path / "x.png").exists()


def test_explore_novelty_against_the_colour_training_set(run, tree, tmp_path, capsys) -> None:
    out = tmp_path / "novelty.png"
    assert main(["explore", "novelty", str(run), "--data", "cifar10", "--data-dir", str(tree), "--n", "6",
                 "--k", "2", "--out", str(out)]) == 0
    assert "20 cifar10:train images" in capsys.readouterr().out and _image(out).mode == "RGB"


def test_generative_augmentation_writes_class_named_colour_folders(run, tmp_path, capsys) -> None:
    out = tmp_path / "generated"
    assert main(["augment", "--generate", str(run), "--per-class", "2", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(CLASSES)
    image = _image(out / "truck" / "gen_00001.png")
    assert image.mode == "RGB" and image.size == (32, 32)


def test_the_studio_serves_the_colour_model(run, tmp_path, monkeypatch) -> None:
    from fastapi.testclient import TestClient

    from atelier.serve import auth
    from atelier.serve.app import create_app
    from atelier.serve.db import Database
    from atelier.serve.settings import ServeConfig

    monkeypatch.setenv("ATELIER_HOME", str(tmp_path / "home"))
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(run, models / "cifar")
    cfg = ServeConfig(models=(str(models),), db=str(tmp_path / "studio.sqlite"), workers=1)
    db = Database(cfg.db_url)
    headers = {"Authorization": f"Bearer {auth.create_token(db, 'alice', ['read', 'generate']).token}"}
    try:
        with TestClient(create_app(cfg, db=db), raise_server_exceptions=False) as c:
            listed = c.get("/v1/models", headers=headers).json()
            assert [m["name"] for m in listed] == ["cifar"]
            entry = listed[0]
            assert entry["channels"] == 3 and entry["resolution"] == 32 and entry["classes"] == 10
            assert entry["class_names"] == list(CLASSES)
            assert c.get("/v1/models/cifar", headers=headers).json()["class_names"] == list(CLASSES)

            r = c.post("/v1/models/cifar/generate", json={"n": 4, "seed": 1}, headers=headers)
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            assert _image(r.content).mode == "RGB"
            r = c.post("/v1/models/cifar/generate", json={"n": 2, "label": 8, "format": "zip"}, headers=headers)
            assert r.status_code == 200
            assert {name.split("/")[0] for name in zipfile.ZipFile(io.BytesIO(r.content)).namelist()} == {"ship"}
            r = c.post("/v1/models/cifar/generate", json={"n": 3, "format": "npz"}, headers=headers)
            with np.load(io.BytesIO(r.content)) as npz:
                assert npz["images"].shape == (3, 32, 32, 3)
            r = c.post("/v1/models/cifar/interpolate", json={"classes": [0, 8], "steps": 4}, headers=headers)
            assert r.status_code == 200 and _image(r.content).mode == "RGB"
            r = c.get("/v1/models/cifar/grid.png", headers=headers)
            assert r.status_code == 200 and _image(r.content).mode == "RGB"
            r = c.post("/v1/models/cifar/generate", json={"n": 1, "label": 10}, headers=headers)
            assert r.status_code == 422 and "0..9" in r.text
    finally:
        db.dispose()
    # rating "real or generated?": the real side is a test image of the model's own (colour) data
    from atelier.serve.catalog import Catalog
    from atelier.serve.ratings import item_image

    catalog = Catalog.from_folders([str(models)], "cpu")
    real, fake = item_image(catalog, "real:cifar:3"), item_image(catalog, "cifar:3")
    assert real.shape == fake.shape == (3, 32, 32) and real.dtype == fake.dtype == torch.uint8


@pytest.mark.slow  # trains a GAN and a VAE (30 and 20 steps) and fits the cifar10-cnn extractor: about 30 s
def test_the_demo_page_on_cifar10(tmp_path, monkeypatch) -> None:
    from atelier.demo import run_demo

    monkeypatch.setenv("ATELIER_HOME", str(tmp_path / "home"))
    tree = make_cifar_tree(tmp_path / "cifar10", {"train": 13, "test": 1})  # 130 images: one VAE batch
    page = run_demo(tmp_path / "demo", data="cifar10", data_dir=str(tree), steps=30, vae_steps=20, flow_steps=10,
                    progress=False, style=False)
    html = page.read_text()
    assert "airplane, automobile, bird" in html and "airplane -&gt; automobile" in html  # names, not 0..9
    assert "digit" not in html.split("CycleGAN")[0].replace("digits", "")  # no digit wording for photos
    assert "cifar10-cnn features" in html and "bits/dim" in html and "in colour" in html
    for name in ("samples.png", "per_class.png", "gan_class_morph.png", "evaluation/nearest.png",
                 "vae_reconstructions.png", "vae_traversal.png", "vae_interpolation.png", "vae_samples.png",
                 "flow_guidance.png", "flow_edit.png", "flow_inpaint.png"):
        image = _image(tmp_path / "demo" / name)
        assert image.mode == "RGB", name
    per_class = _image(tmp_path / "demo" / "per_class.png")
    assert per_class.size[0] == per_class.size[1]  # ten rows (classes) of ten samples
    metrics = (tmp_path / "demo" / "evaluation" / "metrics.json").read_text()
    assert '"extractor": "cifar10-cnn"' in metrics
