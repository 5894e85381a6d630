"""Registry-wide tests, in the manner of timm: every registered model and every registered family.

A new model preset is covered here without editing this file; a new family adds its tiny CLI
arguments to the ``family_args`` fixture in ``tests/conftest.py`` (``test_every_family_has_cli_example``
fails until it does).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atelier.cli import main
from atelier.io import load_tensors
from atelier.models.pretrained import latest_checkpoint, load_pretrained
from atelier.models.registry import create_model, get_family, list_families, list_models, model_family
from atelier.pipelines import Pipeline
from atelier.train import steps  # noqa: F401 - registers every family

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COMMON = ["--log-every", "1", "--no-tensorboard", "--no-progress", "--precision", "fp32"]


def test_every_family_has_cli_example(family_args) -> None:
    missing = [name for name in list_families() if family_args(name) is None]
    assert not missing, f"add the tiny CLI arguments of {missing} to the family_args fixture in tests/conftest.py"


@pytest.mark.parametrize("family", list_families())
def test_every_family_trains_through_the_cli_and_loads(family: str, family_args, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", family, *family_args(family), *COMMON, "--steps", "2", "--out", str(out)]) == 0
    ckpt = latest_checkpoint(out)
    assert ckpt is not None and ckpt.name == "step_0000002"
    assert (out / "history.jsonl").is_file() and (out / "loss_curve.png").is_file()
    model = load_pretrained(out)
    assert model.family == get_family(family).name
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # resume continues the same run to a longer length, bit-identical to a run that was never stopped
    assert main(["train", family, "--out", str(out), "--resume", "--steps", "3", "--no-progress"]) == 0
    assert latest_checkpoint(out).name == "step_0000003"
    straight = tmp_path / "straight"
    assert main(["train", family, *family_args(family), *COMMON, "--steps", "3", "--out", str(straight)]) == 0
    resumed, uninterrupted = load_tensors(latest_checkpoint(out) / "model.safetensors"), \
        load_tensors(latest_checkpoint(straight) / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed), family


def _probe(pipe: Pipeline) -> torch.Tensor:
    """A deterministic output of whatever the model does (its first task)."""
    op, cfg, g = pipe.operations[0], pipe.model.config, torch.Generator().manual_seed(0)
    if op in ("sample", "interpolate"):
        return pipe.sample(4, seed=0)
    if op == "stylize":
        return pipe.stylize(torch.rand(3, 32, 32, generator=g))
    r = getattr(cfg, "resolution", 32)
    images = torch.rand(2, getattr(cfg, "channels_a", getattr(cfg, "channels", 3)), r, r, generator=g) * 2 - 1
    return pipe.translate(images) if op == "translate" else pipe.reconstruct(images)


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
