"""Training the residual GAN family: short runs at 32 and 64 px, n_dis, resume, augmentation, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.data.base import Batch
from atelier.io import load_tensors
from atelier.models.pretrained import latest_checkpoint, load_pretrained
from atelier.models.registry import create_model
from atelier.train import train_model
from atelier.train.checkpoint import load_train_state
from atelier.train.steps.resnet_gan import ResNetGANDataConfig, ResNetGANStep, ResNetGANTrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(g_width=8, d_width=8, latent_dim=16)


def data(resolution: int = 32) -> ResNetGANDataConfig:
    return ResNetGANDataConfig(name="digits", resolution=resolution, channels=3)


def small(**kw) -> ResNetGANTrainConfig:
    base = dict(batch_size=8, tensorboard=False, progress=False, log_every=1, sample_every=1000,
                checkpoint_every=1000)
    return ResNetGANTrainConfig(**{**base, **kw})


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]


def adam_steps(checkpoint: Path) -> dict[str, set[int]]:
    """The step counts Adam holds for each parameter, per optimiser, in a checkpoint."""
    state = load_train_state(checkpoint)["optimizers"]
    return {name: {int(s["step"]) for s in opt["state"].values()} for name, opt in state.items()}


def test_the_defaults_are_sngans_recipe_at_32_px() -> None:
    cfg = ResNetGANTrainConfig()
    # SNGAN's optimiser and batch; one D step per G step, as measured best for CPU budgets
    assert (cfg.lr, cfg.betas, cfg.batch_size, cfg.n_dis) == (2e-4, (0.0, 0.9), 64, 1)
    assert cfg.ema_decay > 0 and cfg.channels_last and cfg.precision == "auto"
    assert ResNetGANDataConfig().resolution == 32
    with pytest.raises(ValueError, match="n_dis"):
        ResNetGANTrainConfig(n_dis=0)


@pytest.mark.parametrize("resolution, conditional", [(32, False), (32, True), (64, False)])
def test_a_short_run_trains_saves_and_loads(tmp_path: Path, resolution: int, conditional: bool) -> None:
    out = tmp_path / "run"
    result = train_model("resnet-gan", data=data(resolution), train=small(steps=4, n_dis=2), out=out,
                         model_kwargs=TINY, conditional=conditional)
    assert result.steps == 4 and result.checkpoint == out / "checkpoints" / "step_0000004"
    records = history(out)
    assert len(records) == 4
    assert all(math.isfinite(r[k]) for r in records for k in ("loss_d", "loss_g", "d_real", "d_fake"))
    assert (out / "samples" / "latest.png").is_file()
    # 4 discriminator updates, 2 generator updates (steps 1 and 3)
    assert adam_steps(result.checkpoint) == {"discriminator": {4}, "generator": {2}}
    model = load_pretrained(out)
    assert model.family == "resnet-gan" and model.conditional == conditional
    assert model.config.num_classes == (10 if conditional else 0)
    images = model.sample(10)
    assert images.shape == (10, 3, resolution, resolution) and torch.isfinite(images).all()
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["n_dis"] == 2 and saved["train"]["betas"] == [0.0, 0.9]


@pytest.mark.parametrize("n_dis, steps", [(1, 3), (3, 7), (5, 10)])
def test_the_generator_is_updated_every_n_dis_steps(tmp_path: Path, n_dis: int, steps: int) -> None:
    result = train_model("resnet-gan", data=data(16), train=small(steps=steps, n_dis=n_dis, precision="fp32"),
                         out=tmp_path / "run", model_kwargs=TINY)
    assert adam_steps(result.checkpoint) == {"discriminator": {steps}, "generator": {steps // n_dis}}


def test_discriminator_only_steps_leave_the_generator_and_its_average_alone() -> None:
    torch.manual_seed(0)
    model = create_model("resnet-gan", resolution=16, **TINY)
    step = ResNetGANStep(model, small(n_dis=3, precision="fp32", channels_last=False), torch.device("cpu"))
    batch = Batch(torch.rand(8, 3, 16, 16) * 2 - 1, None)

    def snapshot():
        return {k: v.clone() for k, v in model.state_dict().items()}

    before = snapshot()
    for i in range(2):  # steps 0 and 1: the discriminator only
        logs = step.train_step(batch, i)
        assert float(logs["loss_g"]) == 0.0  # no generator loss computed yet
    after = snapshot()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("discriminator.") for k in changed)
    # the generator's batch-norm statistics follow its forward passes; its weights and the EMA copy do not move
    assert not {k for k in changed if k.startswith("generator_ema.") or
                (k.startswith("generator.") and "running_" not in k and "num_batches" not in k)}
    logs = step.train_step(batch, 2)  # the generator's step
    assert float(logs["loss_g"]) != 0.0
    final = snapshot()
    assert not torch.equal(final["generator.project.weight"], after["generator.project.weight"])
    assert not torch.equal(final["generator_ema.project.weight"], after["generator_ema.project.weight"])
    assert float(step.train_step(batch, 3)["loss_g"]) == float(logs["loss_g"])  # the last one, carried


def test_a_resumed_run_mid_cycle_is_bit_identical(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    train_model("resnet-gan", data=data(16), train=small(steps=4, n_dis=3), out=a, model_kwargs=TINY,
                conditional=True)
    train_model("resnet-gan", data=data(16), train=small(steps=7, n_dis=3), out=a, model_kwargs=TINY,
                conditional=True, resume=True)
    train_model("resnet-gan", data=data(16), train=small(steps=7, n_dis=3), out=b, model_kwargs=TINY,
                conditional=True)
    resumed, straight = (load_tensors(latest_checkpoint(r) / "model.safetensors") for r in (a, b))
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in resumed)
    assert history(a)[-3:] == [{**r, "images_per_second": h["images_per_second"]}
                               for r, h in zip(history(b)[-3:], history(a)[-3:])]


@pytest.mark.parametrize("augment", ["diffaugment", "ada"])
def test_discriminator_augmentation_works(tmp_path: Path, augment: str) -> None:
    result = train_model("resnet-gan", data=data(16), out=tmp_path / "run", model_kwargs=TINY,
                         train=small(steps=4, n_dis=2, augment=augment, ada_interval=1, ada_kimg=0.01))
    records = history(tmp_path / "run")
    assert all(math.isfinite(r["loss_d"]) for r in records)
    if augment == "ada":
        assert records[-1]["aug_p"] >= 0 and "ada" in load_train_state(result.checkpoint)["step_state"]


def _labelled_folder(root: Path, classes: int = 2, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            pixels[..., c] = 255  # a colour per class
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


def test_the_cli_trains_a_conditional_model_on_a_colour_folder(tmp_path: Path, capsys) -> None:
    folder = _labelled_folder(tmp_path / "photos")
    out = tmp_path / "run"
    argv = ["train", "resnet-gan", "--data", f"folder:{folder}", "--conditional", "--g-width", "8",
            "--d-width", "8", "--latent-dim", "8", "--batch-size", "4", "--steps", "4", "--n-dis", "2",
            "--no-progress", "--no-tensorboard", "--out", str(out)]
    assert main(argv) == 0
    model = load_pretrained(out)
    assert (model.config.resolution, model.config.channels, model.config.num_classes) == (32, 3, 2)
    assert model.sample(2, labels=1).shape == (2, 3, 32, 32)
    with pytest.raises(SystemExit):
        main(["train", "resnet-gan", "--help"])
    text = capsys.readouterr().out
    assert "--n-dis" in text and "--conditional" in text and "sngan32" in text
