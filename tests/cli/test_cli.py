"""``atelier`` on the command line, called in-process through ``atelier.cli.main``."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.creative import sample_images
from atelier.data.base import to_uint8
from atelier.models import GAN
from atelier.report.grid import make_grid
from atelier.models.pretrained import latest_checkpoint
from atelier.train.checkpoint import load_train_state

SRC = Path(__file__).resolve().parents[2] / "src"
TINY_ARGS = ["--data", "digits", "--resolution", "28", "--batch-size", "16", "--g-width", "8", "--d-width", "8",
             "--latent-dim", "16", "--no-tensorboard", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train_cli(out: Path, *extra: str) -> int:
    return main(["train", "gan", *TINY_ARGS, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def uncond_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "uncond"
    assert train_cli(out, "--steps", "4") == 0
    return out


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "cond"
    assert train_cli(out, "--steps", "4", "--conditional") == 0
    return out


def step_of(run: Path) -> int:
    return load_train_state(latest_checkpoint(run))["step"]


# -------------------------------------------------------------------------------------------- train


def test_train_then_resume(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert train_cli(out, "--steps", "4", "--seed", "3") == 0
    printed = capsys.readouterr().out
    assert "4 steps" in printed and str(out / "samples" / "latest.png") in printed
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_0000004"
    assert (out / "checkpoints" / "step_0000004" / "model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["config"]["g_width"] == 8 and config["model"]["config"]["num_classes"] == 0
    assert config["train"]["seed"] == 3 and config["train"]["tensorboard"] is False

    assert main(["train", "gan", "--out", str(out), "--resume", "--steps", "6", "--no-progress"]) == 0
    assert step_of(out) == 6 and latest_checkpoint(out).name == "step_0000006"
    resumed = json.loads((latest_checkpoint(out) / "config.json").read_text())
    assert resumed["train"]["steps"] == 6
    assert resumed["train"]["seed"] == 3 and resumed["train"]["batch_size"] == 16  # the rest is kept
    assert resumed["model"] == config["model"]


def test_resume_of_an_empty_directory_starts_a_new_run(tmp_path: Path, capsys) -> None:
    out = tmp_path / "fresh"
    assert train_cli(out, "--steps", "2", "--resume") == 0
    assert "starting a new run" in capsys.readouterr().err
    assert step_of(out) == 2


def test_conditional_training(cond_run: Path) -> None:
    model = GAN.from_pretrained(cond_run)
    assert model.conditional and model.config.num_classes == 10
    assert step_of(cond_run) == 4


def test_train_on_a_missing_folder_fails_cleanly(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "gan", "--data", "folder:/nonexistent/images", "--steps", "2", "--out", str(out),
                 "--no-progress", "--no-tensorboard"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("atelier: error:") and "/nonexistent/images" in err
    assert "Traceback" not in err
    assert latest_checkpoint(out) is None


def test_bad_batch_size_fails_cleanly(tmp_path: Path, capsys) -> None:
    assert train_cli(tmp_path / "run", "--steps", "2", "--batch-size", "100000") == 2
    assert "batch" in capsys.readouterr().err


def test_steps_and_epochs_are_mutually_exclusive(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        train_cli(tmp_path / "run", "--steps", "2", "--epochs", "1")
    assert info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- sample


def test_sample_png_grid(uncond_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.png"
    assert main(["sample", str(uncond_run), "--n", "10", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    with Image.open(out) as im:
        im.load()
        size, mode = im.size, im.mode
    # 10 samples: ceil(sqrt(10)) = 4 columns, 3 rows; 28 px images enlarged 2x
    grid = make_grid(torch.zeros(10, 1, 28, 28), nrow=4)
    assert grid.shape[1:] == (3 * 30 + 2, 4 * 30 + 2)
    assert size == (grid.shape[2] * 2, grid.shape[1] * 2) and mode == "L"


def test_sample_png_of_a_conditional_run_has_one_column_per_class(cond_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.png"
    assert main(["sample", str(cond_run), "--n", "20", "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == ((10 * 30 + 2) * 2, (2 * 30 + 2) * 2)


def test_sample_npz_unconditional(uncond_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.npz"
    assert main(["sample", str(uncond_run), "--n", "12", "--out", str(out), "--seed", "4"]) == 0
    with np.load(out) as data:
        assert set(data.files) == {"images"}
        images = data["images"]
    assert images.dtype == np.uint8 and images.shape == (12, 28, 28, 1)
    expected = sample_images(GAN.from_pretrained(uncond_run), 12, seed=4).images.permute(0, 2, 3, 1).numpy()
    assert np.array_equal(images, expected)


def test_sample_npz_conditional_labels(cond_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.npz"
    assert main(["sample", str(cond_run), "--n", "12", "--out", str(out)]) == 0
    with np.load(out) as data:
        images, labels = data["images"], data["labels"]
    assert images.dtype == np.uint8 and images.shape == (12, 28, 28, 1)
    assert labels.shape == (12,) and labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]

    out3 = tmp_path / "three.npz"
    assert main(["sample", str(cond_run), "--n", "12", "--out", str(out3), "--label", "3"]) == 0
    with np.load(out3) as data:
        assert data["labels"].tolist() == [3] * 12
        threes = data["images"]
    expected = sample_images(GAN.from_pretrained(cond_run), 12, label=3).images.permute(0, 2, 3, 1).numpy()
    assert np.array_equal(threes, expected)


def test_sample_label_on_an_unconditional_run_fails(uncond_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.npz"
    assert main(["sample", str(uncond_run), "--n", "4", "--out", str(out), "--label", "3"]) == 2
    err = capsys.readouterr().err
    assert "label" in err and "unconditional" in err
    assert not out.exists()


def test_sample_label_out_of_range_fails(cond_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["sample", str(cond_run), "--n", "4", "--out", str(tmp_path / "x.npz"), "--label", "10"]) == 2
    assert "0..9" in capsys.readouterr().err


def test_sample_with_truncation(uncond_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.npz"
    assert main(["sample", str(uncond_run), "--n", "12", "--out", str(out), "--truncation", "0.5"]) == 0
    with np.load(out) as data:
        images = data["images"]
    model = GAN.from_pretrained(uncond_run)
    truncated = sample_images(model, 12, truncation=0.5).images.permute(0, 2, 3, 1).numpy()
    plain = sample_images(model, 12).images.permute(0, 2, 3, 1).numpy()
    assert np.array_equal(images, truncated)
    assert not np.array_equal(images, plain)
    assert main(["sample", str(uncond_run), "--n", "2", "--out", str(out), "--truncation", "-1"]) == 2


def test_sample_from_a_missing_directory_fails(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no_such_run"
    assert main(["sample", str(missing), "--n", "4", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err


def test_sample_to_an_unsupported_suffix_fails(uncond_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["sample", str(uncond_run), "--n", "4", "--out", str(tmp_path / "x.gif")]) == 2
    assert ".gif" in capsys.readouterr().err


def test_sample_streams_an_npz_and_a_folder_across_batches(uncond_run: Path, tmp_path: Path, capsys) -> None:
    n = 503  # two batches of the default 500: the streamed output equals the samples drawn at once
    out = tmp_path / "many.npz"
    assert main(["sample", str(uncond_run), "--n", str(n), "--out", str(out), "--seed", "2"]) == 0
    assert "img" in capsys.readouterr().err  # the progress bar
    expected = sample_images(GAN.from_pretrained(uncond_run), n, seed=2).images.permute(0, 2, 3, 1).numpy()
    with np.load(out) as data:
        assert np.array_equal(data["images"], expected)
    folder = tmp_path / "pngs"
    assert main(["sample", str(uncond_run), "--n", "7", "--out", str(folder), "--seed", "2", "--quiet"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:06d}.png" for i in range(7)]
    with Image.open(folder / "000006.png") as im:
        assert np.array_equal(np.asarray(im), expected[6, :, :, 0])
    assert main(["sample", str(uncond_run), "--n", "3", "--out", str(folder)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["sample", str(uncond_run), "--n", "3", "--out", str(folder), "--overwrite"]) == 0
    assert len(list(folder.iterdir())) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(("n", "out", "says"), [
    ("0", "x.npz", "--n must be between 1 and 1,000,000"),
    ("1000001", "x.npz", "--n must be between 1 and 1,000,000"),
    ("1000000000", "dir", "--n must be between 1 and 1,000,000"),
    ("1025", "x.png", "at most 1024 images"),
])
def test_sample_counts_beyond_the_limits_fail_at_once(tmp_path: Path, capsys, n: str, out: str, says: str) -> None:
    """Refused before the model is even loaded (a run that does not exist is never looked at)."""
    assert main(["sample", str(tmp_path / "no_such_run"), "--n", n, "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert says in err and "no_such_run" not in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("t", ["1e-30", "1e-300", "1e-50"])
def test_sample_with_a_tiny_truncation_returns(uncond_run: Path, tmp_path: Path, t: str) -> None:
    out = tmp_path / "t.npz"
    assert main(["sample", str(uncond_run), "--n", "6", "--out", str(out), "--truncation", t, "--quiet"]) == 0
    model = GAN.from_pretrained(uncond_run)
    with np.load(out) as data:  # latents all but zero: every sample is the image of z = 0
        zero = to_uint8(model.generate(torch.zeros(1, model.config.latent_dim)))[0].permute(1, 2, 0).numpy()
        assert all(np.abs(image.astype(int) - zero).max() <= 1 for image in data["images"])


@pytest.mark.parametrize("t", ["nan", "inf", "-inf", "0", "-1e-9"])
def test_sample_with_a_bad_truncation_fails_cleanly(tmp_path: Path, capsys, t: str) -> None:
    assert main(["sample", str(tmp_path / "no_such_run"), "--n", "2", "--out", str(tmp_path / "x.npz"),
                 f"--truncation={t}"]) == 2
    err = capsys.readouterr().err
    assert "--truncation must be a finite number" in err or "--truncation must be greater than 0" in err, err


def test_sample_refuses_nan_weights_unless_allowed(uncond_run: Path, tmp_path: Path, capsys) -> None:
    model = GAN.from_pretrained(uncond_run)
    name, weight = next((n, p) for n, p in model.named_parameters() if n.startswith("generator_ema."))
    with torch.no_grad():
        weight.view(-1)[:2] = float("nan")
    broken = model.save_pretrained(tmp_path / "broken")
    out = tmp_path / "x.png"
    assert main(["sample", str(broken), "--n", "4", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{name} (2 of" in err and "--allow-nonfinite" in err and "allow_nonfinite=True" not in err
    assert not out.exists()
    assert main(["sample", str(broken), "--n", "4", "--out", str(out), "--allow-nonfinite", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"atelier: warning: {broken / 'model.safetensors'}: the weights hold NaN" in err
    assert "atelier: warning: 4 of 4 samples held NaN" in err and out.exists()


# ------------------------------------------------------------------------------------------- others


def test_models_lists_the_registry(capsys) -> None:
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines}
    assert {"gan", "vae", "cyclegan", "fast-style"} <= set(rows)  # every family, with its presets
    assert "dcgan" in rows["gan"] and "dcgan64" in rows["gan"] and "beta-vae" in rows["vae"]


def test_help_and_version_in_a_subprocess() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "atelier.cli", "--help"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "sample" in proc.stdout and "models" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "atelier.cli", "sample", str(SRC / "nope"), "--out", "x.png"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "nope" in proc.stderr
    # the console script declared in pyproject.toml is this very function
    import tomllib

    pyproject = tomllib.loads((SRC.parent / "pyproject.toml").read_text())
    module, _, func = pyproject["project"]["scripts"]["atelier"].partition(":")
    assert getattr(importlib.import_module(module), func) is main
    script = shutil.which("atelier", path=str(Path(sys.executable).parent))
    if script is not None:  # the console script, when the package is installed into this environment
        proc = subprocess.run([script, "--version"], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0 and "atelier" in proc.stdout


# ------------------------------------------------------------------------------------- config files
def test_config_file_with_command_line_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text('conditional = true\n[data]\nname = "digits"\nresolution = 28\n'
                   "[model]\ng_width = 8\nd_width = 8\nlatent_dim = 16\n"
                   "[train]\nsteps = 5\nbatch_size = 16\ntensorboard = false\nprogress = false\n")
    out = tmp_path / "run"
    assert main(["train", "gan", "--config", str(cfg), "--steps", "2", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["steps"] == 2  # the flag wins over the file
    assert saved["model"]["config"]["num_classes"] == 10  # conditional from the file
    assert saved["model"]["config"]["g_width"] == 8
    assert step_of(out) == 2


def test_config_file_errors_name_the_problem(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nbogus = 1\n")
    assert main(["train", "gan", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "bogus" in capsys.readouterr().err
    bad.write_text("[model]\nwidth = 3\n")
    assert main(["train", "gan", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "width" in capsys.readouterr().err
    assert main(["train", "gan", "--config", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "r")]) == 2
    assert "missing.toml" in capsys.readouterr().err
    # a bad value in the file is named as in the file (section and key), even when a flag overrides it
    bad.write_text("[model]\ng_width = -3\n[train]\nsteps = 1e400\n")
    assert main(["train", "gan", "--config", str(bad), "--g-width", "8", "--out", str(tmp_path / "r")]) == 2
    assert "bad.toml [model]: g_width must be between 1 and 65,536, got -3" in capsys.readouterr().err
    bad.write_text("[train]\nsteps = inf\n")
    assert main(["train", "gan", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "bad.toml [train]: steps must be a finite whole number, got inf" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing was started


def _all_parsers(parser, path=()):
    """(command path, parser) for ``parser`` and every sub-command below it."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*path, name))


def test_every_command_formats_its_help() -> None:
    """--help of every command and sub-command renders (help text derived from config comments once
    crashed argparse with a literal "%" in a comment)."""
    from atelier.cli import build_parser

    parsers = list(_all_parsers(build_parser()))
    assert len(parsers) > 20 and any(path == ("train", "flow") for path, _ in parsers)
    for path, parser in parsers:
        text = parser.format_help()
        assert "usage:" in text, path
    train_flow = dict(parsers)[("train", "flow")].format_help()
    assert "13% of the best" in train_flow  # the literal percent sign survives, undoubled
