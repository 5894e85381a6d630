"""Transfer with --init-from: a run starts from a saved model's weights (every family), partial loading when a
class count changes (said, tensor by tensor), refusals (another family, a different architecture, no key for
an encrypted model), a real head start on the loss, an exact resume, and the command line end to end."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import build_parser, main
from atelier.io import load_tensors
from atelier.models.pretrained import KeyRequiredError, latest_checkpoint, load_pretrained
from atelier.models.registry import create_model, get_family, list_families
from atelier.protect.envelope import KEY_ENV, IntegrityError, Key, seal_model_dir
from atelier.train import DataConfig, family_train_config, train_model
from atelier.train.checkpoint import load_train_state
from atelier.train.init_from import InitFromError, InitFromNote, load_init_source
from atelier.train.trainer import Trainer
from atelier.weights import sha256_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COMMON = ["--log-every", "1", "--no-tensorboard", "--no-progress", "--precision", "fp32"]
CONDITIONAL = [name for name in list_families() if get_family(name).conditional]


class _Captured(Exception):
    """Raised in place of training: the model's tensors as they are before the first step were kept."""


def before_first_step(monkeypatch: pytest.MonkeyPatch, run) -> dict[str, torch.Tensor]:
    """The model's state dict as the trainer receives it (after any init-from, before any update)."""
    captured: dict[str, torch.Tensor] = {}

    def fit(self, *, resume: bool = False):
        captured.update({k: v.detach().cpu().clone() for k, v in self.step_fn.model.state_dict().items()})
        raise _Captured

    with monkeypatch.context() as m:
        m.setattr(Trainer, "fit", fit)
        with pytest.raises(_Captured):
            run()
    return captured


def saved_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_tensors(latest_checkpoint(run) / "model.safetensors")


def _train_parser(family: str) -> argparse.ArgumentParser:
    def child(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]

    return child(child(build_parser(), "train"), family)


def without_model_flags(family: str, argv: list[str]) -> list[str]:
    """``argv`` less the model's flags (--g-width 8 ...): with --init-from they default to the source's."""
    parser = _train_parser(family)
    model = set(parser.get_default("config_dests")["model"])
    actions = {s: a for a in parser._actions for s in a.option_strings}
    out, i = [], 0
    while i < len(argv):
        action = actions.get(argv[i])
        n = 1 if action is None or action.nargs == 0 else 2
        if action is None or action.dest not in model:
            out += argv[i:i + n]
        i += n
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory, family_args):
    """``source(family, conditional=False)``: a tiny run of the family trained two steps (made once)."""
    root, made = tmp_path_factory.mktemp("sources"), {}

    def make(family: str, conditional: bool = False) -> Path:
        if (family, conditional) not in made:
            out = root / f"{family}{'-cond' if conditional else ''}"
            flags = ["--conditional"] if conditional else []
            assert main(["train", family, *family_args(family), *flags, *COMMON, "--steps", "2",
                         "--out", str(out)]) == 0
            made[family, conditional] = out
        return made[family, conditional]

    return make


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory) -> Path:
    """A labelled folder: 3 classes (sub-folders) of 4 grey 28 px images each."""
    root = tmp_path_factory.mktemp("three")
    rng = np.random.default_rng(0)
    for c in ("circle", "square", "triangle"):
        (root / c).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


# ------------------------------------------------------------------------------------- every family


@pytest.mark.parametrize("family", list_families())
def test_init_from_gives_the_new_model_exactly_the_saved_tensors(family: str, family_args, source, tmp_path,
                                                                  monkeypatch, capsys) -> None:
    src = source(family)
    data_flags = without_model_flags(family, family_args(family))  # the architecture comes from the source
    argv = ["train", family, *data_flags, *COMMON, "--steps", "1", "--out", str(tmp_path / "run")]
    loaded = before_first_step(monkeypatch, lambda: main([*argv, "--init-from", str(src)]))
    assert f"note: init-from {src}" in capsys.readouterr().err
    saved = saved_weights(src)
    assert loaded.keys() == saved.keys()
    for key in saved:
        assert torch.equal(loaded[key], saved[key]), key
    # the averaged copies start from the saved averages, which two steps made differ from the raw weights
    averaged = [k for k in saved if "_ema." in k]
    assert bool(averaged) == bool(get_family(family).train_config().ema_decay)
    assert not averaged or any(not torch.equal(saved[k], saved[k.replace("_ema.", ".")]) for k in averaged)
    # and none of this is what a fresh start would have had
    fresh = before_first_step(monkeypatch, lambda: main([*argv, *family_args(family)]))
    assert fresh.keys() == saved.keys() and any(not torch.equal(fresh[k], saved[k]) for k in saved)


@pytest.mark.parametrize("family", list_families())
def test_a_model_of_another_family_is_refused_naming_both(family: str, source, tmp_path) -> None:
    others = [f for f in list_families() if f != family]
    other = others[0]
    f = get_family(family)
    with pytest.raises(InitFromError) as info:
        train_model(f.default_model, data=f.data_config(), train=family_train_config(family, steps=1),
                    out=tmp_path / "run", init_from=source(other))
    assert f"holds a {other} model" in str(info.value) and f"trains a {family} model" in str(info.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("family", CONDITIONAL)
def test_a_new_class_count_loads_all_but_the_class_tensors_and_says_which(family: str, source, three_classes,
                                                                           tmp_path, monkeypatch) -> None:
    src = source(family, conditional=True)  # 10 digit classes
    f = get_family(family)
    saved, saved_config = saved_weights(src), load_pretrained(src).config

    def run():
        train_model(f.default_model, data=DataConfig(name=f"folder:{three_classes}"),
                    train=family_train_config(family, batch_size=4, steps=1, progress=False, tensorboard=False,
                                              precision="fp32"),
                    out=tmp_path / "run", init_from=src)  # conditional, as the source is

    with pytest.warns(InitFromNote) as notes:
        loaded = before_first_step(monkeypatch, run)
    # what depends on the class count, found independently: the shapes of a 10-class and a 3-class model
    settings = dataclasses.asdict(saved_config)
    ten = create_model(f.default_model, **settings).state_dict()
    three = create_model(f.default_model, **{**settings, "num_classes": 3}).state_dict()
    depends = {k for k in ten if ten[k].shape != three[k].shape}
    assert depends and any("_ema." in k for k in depends) == any("_ema." in k for k in saved)
    text = str(notes[0].message)
    assert "loaded" in text and f"of {len(three)} tensors" in text and "num_classes 10 -> 3" in text
    for key in three:
        if key in depends:  # named with both shapes, and left at its fresh initialisation
            assert f"{key} (shape {tuple(three[key].shape)} in the model, {tuple(ten[key].shape)} saved)" in text
            assert loaded[key].shape == three[key].shape, key
        else:
            assert f"{key} (shape" not in text and torch.equal(loaded[key], saved[key]), key


# ------------------------------------------------------------------------------------- one family each


def test_a_different_architecture_is_refused_unless_forced(source, family_args, tmp_path, capsys) -> None:
    src = source("gan")
    out = tmp_path / "run"
    argv = ["train", "gan", "--data", "digits", "--batch-size", "8", "--latent-dim", "8", *COMMON, "--steps", "1",
            "--init-from", str(src), "--out", str(out), "--g-width", "16", "--d-width", "16"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "g_width 8 -> 16" in err and "--init-force" in err and "init_force=True" not in err
    assert not out.exists()
    assert main([*argv, "--init-force"]) == 0
    record = json.loads((out / "config.json").read_text())["init_from"]
    assert record["forced"] and record["parameters_loaded"] < 0.5 and record["tensors_loaded"] > 0


def test_a_refused_init_leaves_the_run_it_would_overwrite_alone(source, tmp_path) -> None:
    src, out = source("gan"), tmp_path / "run"
    shutil.copytree(source("vae"), out)
    assert main(["train", "gan", "--data", "digits", *COMMON, "--steps", "1", "--init-from", str(src), "--g-width",
                 "16", "--out", str(out), "--overwrite"]) == 2
    assert latest_checkpoint(out) is not None and (out / "history.jsonl").is_file()


def test_an_encrypted_source_needs_its_key(source, tmp_path, monkeypatch, capsys) -> None:
    src = source("gan")
    ckpt = latest_checkpoint(src)
    key = Key.generate()
    (tmp_path / "model.key").write_text(key.to_text())
    sealed = seal_model_dir(ckpt, tmp_path / "sealed", key).parent
    monkeypatch.delenv(KEY_ENV, raising=False)
    f = get_family("gan")
    train = family_train_config("gan", batch_size=8, steps=1, progress=False, tensorboard=False)
    with pytest.raises(KeyRequiredError, match="encrypted"):
        train_model("dcgan", data=DataConfig(), train=train, out=tmp_path / "a", init_from=sealed)
    with pytest.raises(IntegrityError):
        train_model("dcgan", data=DataConfig(), train=train, out=tmp_path / "a", init_from=sealed,
                    init_key=Key.generate())
    opened = load_init_source(sealed, key)
    # the record names the weights, not the envelope: the same digest as the plain model's
    assert opened.sealed and opened.sha256 == sha256_file(ckpt / "model.safetensors")
    loaded = before_first_step(monkeypatch, lambda: train_model(
        f.default_model, data=DataConfig(), train=train, out=tmp_path / "a", init_from=sealed, init_key=key))
    saved = saved_weights(src)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)

    # the command line: without a key a clear error, with --key-file or $ATELIER_MODEL_KEY it trains
    argv = ["train", "gan", "--data", "digits", "--batch-size", "8", *COMMON, "--steps", "1", "--init-from",
            str(sealed)]
    assert main([*argv, "--out", str(tmp_path / "b")]) == 2
    assert "encrypted" in capsys.readouterr().err and not (tmp_path / "b").exists()
    assert main([*argv, "--out", str(tmp_path / "b"), "--key-file", str(tmp_path / "model.key")]) == 0
    record = json.loads((tmp_path / "b" / "config.json").read_text())["init_from"]
    assert record["sealed"] and record["weights_sha256"] == sha256_file(ckpt / "model.safetensors")
    monkeypatch.setenv(KEY_ENV, key.to_text())
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0


def test_fine_tuning_starts_at_a_lower_loss_than_training_from_scratch(tmp_path) -> None:
    """A VAE trained a little, then trained on the same data again: from its weights the first loss is far
    below the first loss of a fresh model with the same seed."""
    tiny = dict(width=8, hidden=0, latent_dim=4)

    def train(out: Path, steps: int, **kw):
        cfg = family_train_config("vae", batch_size=32, steps=steps, log_every=1, iw_samples=0, progress=False,
                                  tensorboard=False, precision="fp32", sample_every=1000, checkpoint_every=1000)
        return train_model("vae", data=DataConfig(), train=cfg, out=out, **kw)

    pretrained = train(tmp_path / "pretrained", 60, model_kwargs=tiny)
    scratch = train(tmp_path / "scratch", 1, model_kwargs=tiny)
    with pytest.warns(InitFromNote, match="loaded all"):
        tuned = train(tmp_path / "tuned", 1, init_from=tmp_path / "pretrained")
    first = {name: r.history[0]["loss"] for name, r in (("scratch", scratch), ("tuned", tuned))}
    # the 60 steps did learn (564 -> 480 nats when written), and the same first batch costs the fine-tuned
    # model about what the end of that run cost, far less than the fresh model with the same seed
    assert pretrained.history[-1]["loss"] < 0.9 * pretrained.history[0]["loss"]
    assert first["tuned"] < 0.9 * first["scratch"], first
    assert tuned.init_from["tensors_loaded"] == tuned.init_from["tensors"]


def test_resume_after_init_from_is_bit_identical_and_does_not_reinitialise(source, tmp_path) -> None:
    src = tmp_path / "source"
    shutil.copytree(source("gan"), src)
    base = ["train", "gan", "--data", "digits", "--batch-size", "8", *COMMON, "--init-from", str(src)]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main([*base, "--steps", "4", "--out", str(a)]) == 0
    assert main([*base, "--steps", "2", "--out", str(b)]) == 0
    assert main([*base, "--steps", "2", "--out", str(c)]) == 0
    record = json.loads((a / "config.json").read_text())["init_from"]
    shutil.rmtree(src)  # a resume reads its own checkpoint, never the source again
    assert main(["train", "gan", "--out", str(b), "--resume", "--steps", "4", "--no-progress"]) == 0
    cfg = family_train_config("gan", batch_size=8, steps=4, log_every=1, tensorboard=False, progress=False,
                              precision="fp32")
    train_model("dcgan", data=DataConfig(), train=cfg, out=c, init_from=src, resume=True)  # the same call, resumed
    for run in (b, c):
        assert latest_checkpoint(run).name == latest_checkpoint(a).name == "step_0000004"
        ours, straight = saved_weights(run), saved_weights(a)
        assert ours.keys() == straight.keys() and all(torch.equal(ours[k], straight[k]) for k in ours), run
        state, straight_state = load_train_state(latest_checkpoint(run)), load_train_state(latest_checkpoint(a))
        for name in straight_state["optimizers"]:
            for i, moments in straight_state["optimizers"][name]["state"].items():
                assert torch.equal(moments["exp_avg"], state["optimizers"][name]["state"][i]["exp_avg"])
        assert json.loads((run / "config.json").read_text())["init_from"] == record  # the record is kept


def test_cli_end_to_end(source, tmp_path, capsys) -> None:
    src, out = source("gan"), tmp_path / "run"
    # no --g-width, --d-width, --latent-dim: the saved model's settings are the defaults
    assert main(["train", "gan", "--data", "digits", "--batch-size", "8", *COMMON, "--steps", "2",
                 "--init-from", str(src), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"note: init-from {src} (gan," in err and "loaded all" in err
    config = json.loads((out / "config.json").read_text())
    saved_config = json.loads((latest_checkpoint(src) / "config.json").read_text())["model"]["config"]
    assert config["model"]["config"] == saved_config
    record = config["init_from"]
    assert record["source"] == str(src) and record["family"] == "gan" and record["name"] == "dcgan"
    assert record["weights_sha256"] == sha256_file(latest_checkpoint(src) / "model.safetensors")
    assert record["tensors_loaded"] == record["tensors"] > 0 and record["kept_fresh"] == [] and not record["sealed"]
    assert json.loads((latest_checkpoint(out) / "config.json").read_text())["init_from"] == record
    assert load_pretrained(out).config == load_pretrained(src).config
    assert load_train_state(latest_checkpoint(out))["step"] == 2  # counted from 0, not from the source's 2

    with pytest.raises(SystemExit) as info:  # --resume and --init-from exclude each other
        main(["train", "gan", "--out", str(out), "--resume", "--init-from", str(src)])
    assert info.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert main(["train", "gan", "--out", str(tmp_path / "x"), "--key-env", "SOME_KEY"]) == 2
    assert "--init-from" in capsys.readouterr().err
    assert main(["train", "vae", "--out", str(tmp_path / "x"), "--init-from", str(src)]) == 2
    err = capsys.readouterr().err
    assert "--init-from" in err and "holds a gan model" in err and "trains a vae model" in err


def test_a_conditional_source_on_unlabelled_data_says_how_to_go_unconditional(source, three_classes, tmp_path,
                                                                              capsys) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for image in sorted(three_classes.glob("*/*.png")):
        shutil.copy(image, flat / f"{image.parent.name}-{image.name}")
    argv = ["train", "gan", "--data", f"folder:{flat}", "--batch-size", "4", *COMMON, "--steps", "1", "--init-from",
            str(source("gan", conditional=True)), "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "has no labels" in err and "conditional because --init-from" in err and "--no-conditional" in err
    # unconditional, the label embeddings have no place, and the generator's first layer changes shape
    assert main([*argv, "--no-conditional", "--init-force"]) == 0
    record = json.loads((tmp_path / "run" / "config.json").read_text())["init_from"]
    assert "generator.embed.weight" in record["unused"] and "generator.project.0.weight" in record["kept_fresh"]
    assert record["changed_settings"] == {"num_classes": [10, 0]}
