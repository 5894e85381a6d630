"""Evaluation during training is checked before the run does any work: data that no feature extractor can
mean anything for is refused at once, not after --eval-every steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atelier.cli import main
from atelier.data import DataError
from atelier.train import DataConfig, GANTrainConfig, train_model
from atelier.train.evaluation import check_evaluation

TINY = dict(g_width=8, d_width=8, latent_dim=8)


@pytest.fixture
def unlabelled(tmp_path) -> Path:
    """A folder of colour images with no class sub-folders."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_the_extractor_is_chosen_up_front(atelier_home, unlabelled) -> None:
    assert check_evaluation(DataConfig(name="digits"), GANTrainConfig(eval_every=5)) == "digits-cnn"
    assert check_evaluation(DataConfig(name="cifar10"), GANTrainConfig(eval_every=5)) == "cifar10-cnn"
    assert check_evaluation(DataConfig(name=f"folder:{unlabelled}"), GANTrainConfig()) is None  # no evaluation
    with pytest.raises(DataError, match="fit-classifier"):
        check_evaluation(DataConfig(name=f"folder:{unlabelled}", resolution=16), GANTrainConfig(eval_every=5))


def test_an_unlabelled_folder_with_eval_every_is_refused_before_the_first_step(atelier_home, unlabelled,
                                                                             tmp_path) -> None:
    out = tmp_path / "run"
    train = GANTrainConfig(steps=4, batch_size=4, eval_every=2, progress=False)
    with pytest.raises(DataError) as caught:
        train_model("dcgan", data=DataConfig(name=f"folder:{unlabelled}", resolution=16), train=train, out=out,
                    model_kwargs=TINY)
    text = str(caught.value)
    assert "cannot evaluate during training (every 2 steps), so nothing was trained" in text
    assert f"sort its images into {unlabelled}/CLASS/" in text and "InceptionV3" in text and "eval_every" in text
    assert not out.exists()  # not a step, not a run directory


def test_the_cli_refuses_at_once_and_leaves_an_existing_run_alone(atelier_home, unlabelled, tmp_path,
                                                                  capsys) -> None:
    out = tmp_path / "run"
    args = ["train", "gan", "--data", f"folder:{unlabelled}", "--resolution", "16", "--batch-size", "4",
            "--g-width", "8", "--d-width", "8", "--latent-dim", "8", "--no-progress", "--no-tensorboard",
            "--out", str(out)]
    assert main([*args, "--steps", "1"]) == 0  # without evaluation it trains
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    capsys.readouterr()
    assert main([*args, "--steps", "3", "--eval-every", "1", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "nothing was trained" in err and "atelier metrics fit-classifier --data folder:" in err
    assert "--eval-every" in err and "Traceback" not in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # --overwrite deleted nothing
