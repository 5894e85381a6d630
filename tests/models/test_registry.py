"""Registry-wide tests, in the manner of timm: every registered model and every registered family.

A new model preset is covered here without editing this file; a new family must add its tiny CLI
arguments to ``FAMILY_ARGS`` (``test_every_family_has_cli_example`` fails until it does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.models.pretrained import latest_checkpoint, load_pretrained
from atelier.models.registry import create_model, get_family, list_families, list_models, model_family
from atelier.pipelines import Pipeline
from atelier.train import steps  # noqa: F401 - registers every family

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COMMON = ["--steps", "2", "--log-every", "1", "--no-tensorboard", "--no-progress", "--precision", "fp32"]


def _blobs(folder: Path, n: int, *, colour: bool, seed: int, size: int = 24) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cy, cx, r = rng.uniform(6, size - 6), rng.uniform(6, size - 6), rng.uniform(2, 6)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8) * 200 + 30
        image = np.stack([blob, 255 - blob, blob // 2], -1) if colour else blob
        Image.fromarray(image.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("registry")
    return {"a": _blobs(root / "a", 8, colour=False, seed=0), "b": _blobs(root / "b", 8, colour=True, seed=1),
            "photos": _blobs(root / "photos", 4, colour=True, seed=2, size=48),
            "style": _blobs(root / "style", 1, colour=True, seed=3, size=48) / "000.png"}


def family_args(name: str, folders: dict[str, Path]) -> list[str]:
    """The smallest CLI training run of each registered family."""
    examples = {
        "gan": ["--data", "digits", "--batch-size", "8", "--g-width", "8", "--d-width", "8", "--latent-dim", "8"],
        "vae": ["--data", "digits", "--batch-size", "8", "--width", "8", "--hidden", "0", "--latent-dim", "4",
                "--iw-samples", "2", "--iw-images", "8"],
        "cyclegan": ["--domain-a", str(folders["a"]), "--domain-b", str(folders["b"]), "--resolution", "16",
                     "--batch-size", "2", "--g-width", "4", "--d-width", "4", "--n-blocks", "1"],
        "fast-style": ["--style", str(folders["style"]), "--content-dir", str(folders["photos"]), "--size", "32",
                       "--batch-size", "2", "--width", "4", "--n-res-blocks", "1", "--no-download"],
    }
    return examples.get(name)


def test_every_family_has_cli_example(folders) -> None:
    missing = [name for name in list_families() if family_args(name, folders) is None]
    assert not missing, f"add the tiny CLI arguments of {missing} to family_args in {__file__}"


@pytest.mark.parametrize("family", list_families())
def test_every_family_trains_through_the_cli_and_loads(family: str, folders, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", family, *family_args(family, folders), *COMMON, "--out", str(out)]) == 0
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == "step_0000002"
    assert (out / "history.jsonl").is_file() and (out / "loss_curve.png").is_file()
    model = load_pretrained(out)
    assert model.family == get_family(family).name
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # resume continues the same run to a longer length
    assert main(["train", family, "--out", str(out), "--resume", "--steps", "3", "--no-progress"]) == 0
    assert latest_checkpoint(out).name == "step_0000003"


def _probe(pipe: Pipeline) -> torch.Tensor:
    """A deterministic output of whatever the model does."""
    op = pipe.operations[0]
    if op == "sample":
        return pipe.sample(4, seed=0)
    if op == "translate":
        c, r = pipe.model.config.channels_a, pipe.model.config.resolution
        return pipe.translate(torch.rand(2, c, r, r, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    if op == "stylize":
        return pipe.stylize(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)))
    raise AssertionError(f"no probe for {op}")


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_round_trips_through_save_pretrained(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    assert model.family == model_family(name)
    directory = model.save_pretrained(tmp_path / name)
    loaded = load_pretrained(directory)
    assert type(loaded) is type(model) and loaded.config == model.config
    before = Pipeline(model, directory)
    after = Pipeline.load(directory)
    assert after.operations == before.operations and after.operations
    assert torch.equal(_probe(before), _probe(after))
