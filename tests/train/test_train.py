"""The training loop end to end on the bundled digits: resume, determinism, outputs, guards, quality."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.data import DataError, load_dataset, to_float
from atelier.models import GAN
from atelier.models.registry import create_model
from atelier.report.grid import make_grid
from atelier.train import DataConfig, TrainConfig, TrainingDiverged, family_train_config, resume_configs, train_model
from atelier.train.steps import gan as steps_mod
from atelier.models.pretrained import latest_checkpoint
from atelier.io import load_tensors
from atelier.train.checkpoint import load_train_state

DIGITS = DataConfig(name="digits", resolution=28)
TINY = dict(g_width=8, d_width=8, latent_dim=16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small(**kw) -> TrainConfig:
    base = dict(batch_size=16, tensorboard=False, progress=False, log_every=1, sample_every=1000,
                checkpoint_every=1000)
    base.update(kw)
    return TrainConfig(**base)


def train(out: Path, *, model_kwargs: dict | None = None, conditional: bool = False, resume: bool = False,
          data: DataConfig = DIGITS, **train_kw):
    return train_model("dcgan", data=data, train=small(**train_kw), out=out,
                       model_kwargs=dict(TINY, **(model_kwargs or {})), conditional=conditional, resume=resume)


def assert_same_tree(a, b, path: str = "") -> None:
    """Nested dicts/lists with tensors: equal structure, bit-identical tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_tree(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize(
    "conditional, model_kwargs, via",
    [
        (False, {}, "train_model"),
        (True, {}, "resume_configs"),
        (False, {"d_norm": "spectral", "loss": "hinge"}, "resume_configs"),
    ],
    ids=["unconditional", "conditional", "spectral-hinge"],
)
def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path: Path, conditional: bool,
                                                              model_kwargs: dict, via: str) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    result_a = train(a, steps=6, conditional=conditional, model_kwargs=model_kwargs)
    assert result_a.steps == 6
    first = train(b, steps=3, conditional=conditional, model_kwargs=model_kwargs)
    assert first.steps == 3 and latest_checkpoint(b).name == "step_0000003"
    if via == "train_model":
        result_b = train(b, steps=6, conditional=conditional, model_kwargs=model_kwargs, resume=True)
    else:
        name, model_cfg, data, train_cfg = resume_configs(b, {"steps": 6})
        assert name == "dcgan" and train_cfg.steps == 6 and train_cfg.batch_size == 16
        assert bool(model_cfg["num_classes"]) == conditional
        result_b = train_model(name, data=data, train=train_cfg, out=b, model_kwargs=model_cfg, resume=True)
    assert result_b.steps == 6

    ckpt_a, ckpt_b = latest_checkpoint(a), latest_checkpoint(b)
    assert ckpt_a.name == ckpt_b.name == "step_0000006"
    model_a, model_b = load_tensors(ckpt_a / "model.safetensors"), load_tensors(ckpt_b / "model.safetensors")
    assert model_a.keys() == model_b.keys()
    groups = {k.split(".")[0] for k in model_a}
    assert groups == {"generator", "discriminator", "generator_ema"}
    if model_kwargs.get("d_norm") != "spectral":
        assert any("running_mean" in k for k in model_a)  # batch-norm buffers are compared too
    else:
        assert any(k.endswith("_u") for k in model_a)  # spectral-norm power-iteration vectors too
    for key in model_a:
        assert torch.equal(model_a[key], model_b[key]), key

    state_a, state_b = load_train_state(ckpt_a), load_train_state(ckpt_b)
    assert state_a["step"] == state_b["step"] == 6
    for key in ("optimizers", "step_state", "rng"):
        assert_same_tree(state_a[key], state_b[key], key)
    assert set(state_a["optimizers"]) == {"generator", "discriminator"}
    assert state_a["optimizers"]["generator"]["state"]  # Adam moments exist and were compared

    # the weights really moved, so the equality above is not the trivial one of two fresh models
    torch.manual_seed(0)
    init = create_model("dcgan", resolution=28, channels=1, num_classes=10 if conditional else 0,
                        **dict(TINY, **model_kwargs)).state_dict()
    assert not torch.equal(init["generator.project.0.weight"], model_a["generator.project.0.weight"])

    # the log of the resumed run matches the uninterrupted one step for step
    hist_a, hist_b = history(a), history(b)
    assert [h["step"] for h in hist_b] == [1, 2, 3, 4, 5, 6]
    for ha, hb in zip(hist_a, hist_b):
        assert {k: v for k, v in ha.items() if k != "images_per_second"} == {
            k: v for k, v in hb.items() if k != "images_per_second"
        }


def test_resume_without_a_checkpoint_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tmp_path / "empty", steps=2, resume=True)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        resume_configs(tmp_path / "empty", {})


# ------------------------------------------------------------------------------------- determinism


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path) -> None:
    runs = {name: train(tmp_path / name, steps=3, seed=seed) for name, seed in (("a", 5), ("b", 5), ("c", 6))}
    weights = {name: load_tensors(r.checkpoint / "model.safetensors") for name, r in runs.items()}
    for key in weights["a"]:
        assert torch.equal(weights["a"][key], weights["b"][key]), key
    differing = [k for k in weights["a"] if not torch.equal(weights["a"][k], weights["c"][k])]
    assert any(k.startswith("generator.") for k in differing)
    assert any(k.startswith("discriminator.") for k in differing)


# ------------------------------------------------------------------------------------------ outputs


def test_run_directory_contents(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train(run, steps=4, log_every=2, sample_every=2, checkpoint_every=2)
    assert result.steps == 4 and result.run_dir == run
    assert result.checkpoint == run / "checkpoints" / "step_0000004"

    config = json.loads((run / "config.json").read_text())
    assert {"model", "train", "data", "environment"} <= set(config)
    assert config["environment"]["torch"] == torch.__version__
    assert config["model"]["name"] == "dcgan" and config["model"]["family"] == "gan"
    assert config["model"]["config"]["g_width"] == 8 and config["model"]["config"]["latent_dim"] == 16
    assert config["train"]["steps"] == 4 and config["train"]["batch_size"] == 16
    assert config["data"]["name"] == "digits" and config["data"]["resolution"] == 28
    assert json.loads((result.checkpoint / "config.json").read_text())["model"] == config["model"]

    assert (run / "checkpoints" / "latest").read_text().strip() == "step_0000004"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_0000002", "step_0000004"]

    records = history(run)
    assert [r["step"] for r in records] == [2, 4]
    for r in records:
        assert {"step", "epoch", "loss_d", "loss_g", "d_real", "d_fake", "images_per_second"} <= set(r)
        assert all(math.isfinite(v) for v in r.values())
    assert records == result.history

    with Image.open(run / "samples" / "latest.png") as im:
        im.load()
        latest = np.asarray(im)
    # 64 previews in 8 columns, 28 px + 2 px padding, enlarged 2x
    grid = make_grid(torch.zeros(64, 1, 28, 28), nrow=8)
    assert latest.shape == (grid.shape[1] * 2, grid.shape[2] * 2)
    assert latest.std() > 0  # not a blank image
    assert (run / "samples" / "step_0000002.png").is_file() and (run / "samples" / "step_0000004.png").is_file()
    with Image.open(run / "loss_curve.png") as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100
    assert not (run / "tb").exists()
    assert not list(run.rglob(".*"))  # no temporary files left anywhere

    loaded = GAN.from_pretrained(run)
    assert loaded.config.g_width == 8 and loaded.sample(2).shape == (2, 1, 28, 28)


def test_tensorboard_events_are_written(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(run, steps=2, tensorboard=True)
    events = list((run / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


# ---------------------------------------------------------------------------------------- NaN guard


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    run, bad_step = tmp_path / "run", 5  # 1-based step at which the loss turns NaN
    original = steps_mod.discriminator_loss
    calls = {"n": 0}

    def poisoned(real_logits, fake_logits, kind):
        calls["n"] += 1
        loss = original(real_logits, fake_logits, kind)
        return loss * float("nan") if calls["n"] >= bad_step else loss

    monkeypatch.setattr(steps_mod, "discriminator_loss", poisoned)
    with pytest.raises(TrainingDiverged) as info:
        train(run, steps=20, checkpoint_every=2)
    message = str(info.value)
    kept = run / "checkpoints" / "step_0000004"
    assert "loss_d" in message and f"step {bad_step}" in message
    assert str(kept) in message
    assert calls["n"] == bad_step  # it stopped at once

    assert latest_checkpoint(run) == kept
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_0000002", "step_0000004"]
    model = GAN.from_pretrained(run)
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())
    assert load_train_state(kept)["step"] == 4 < bad_step
    assert torch.isfinite(model.sample(4)).all()
    assert all(h["step"] < bad_step for h in history(run))

    # the kept checkpoint resumes cleanly once the fault is gone
    monkeypatch.undo()
    resumed = train(run, steps=6, resume=True)
    assert resumed.steps == 6 and latest_checkpoint(run).name == "step_0000006"


# ------------------------------------------------------------------------------------- run lengths


def test_minutes_budget_stops_by_itself(tmp_path: Path) -> None:
    cfg_minutes = 0.02  # 1.2 s
    start = time.perf_counter()
    result = train(tmp_path / "run", steps=None, minutes=cfg_minutes)
    wall = time.perf_counter() - start
    assert result.steps >= 1
    assert cfg_minutes * 60 <= result.seconds < cfg_minutes * 60 + 5
    assert wall < 30
    assert load_train_state(result.checkpoint)["step"] == result.steps


def test_one_epoch_is_steps_per_epoch_steps(tmp_path: Path) -> None:
    size = len(load_dataset("digits", resolution=28, progress=False))
    result = train(tmp_path / "run", batch_size=64, epochs=1, log_every=1000)
    assert result.steps == size // 64
    assert result.history[-1]["epoch"] == 1.0


def test_steps_and_epochs_are_exclusive() -> None:
    with pytest.raises(ValueError, match="either steps or epochs"):
        TrainConfig(steps=3, epochs=1)


# ----------------------------------------------------------------------------------------- bad data


def test_batch_larger_than_the_dataset_raises_data_error(tmp_path: Path) -> None:
    size = len(load_dataset("digits", resolution=28, progress=False))
    with pytest.raises(DataError) as info:
        train(tmp_path / "run", steps=2, batch_size=size + 1)
    assert str(size) in str(info.value) and "batch" in str(info.value)
    assert latest_checkpoint(tmp_path / "run") is None


@pytest.fixture
def unlabelled_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
    return folder


def test_conditional_on_unlabelled_data_raises_data_error(tmp_path: Path, unlabelled_folder: Path) -> None:
    data = DataConfig(name=f"folder:{unlabelled_folder}", resolution=28)
    with pytest.raises(DataError, match="labels"):
        train(tmp_path / "run", steps=2, conditional=True, data=data)
    with pytest.raises(DataError, match="labels"):
        train(tmp_path / "run", steps=2, model_kwargs={"num_classes": 10}, data=data)
    # the same folder trains fine unconditionally
    assert train(tmp_path / "ok", steps=1, data=data).steps == 1


def test_model_and_data_shape_mismatch_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="32"):
        train(tmp_path / "run", steps=1, model_kwargs={"resolution": 32})


def test_data_resolution_left_open_follows_the_model_then_the_dataset() -> None:
    from atelier.train.run import resolve_resolution

    class Source:  # an --init-from model, as far as the choice is concerned
        config = {"resolution": 64}

    def side(name: str, model: str, **kw) -> int:
        return resolve_resolution(DataConfig(name=name), model, kw.pop("model_kwargs", {}), **kw).resolution

    assert side("cifar10", "flow") == 32 and side("digits", "flow") == side("folder:/x", "flow") == 28  # the data's own
    assert side("digits", "flow-cifar") == 32  # the preset's
    assert side("digits", "flow", model_kwargs={"resolution": 48}) == 48
    assert side("digits", "flow", source=Source()) == 64
    assert resolve_resolution(DataConfig(name="cifar10", resolution=40), "flow-cifar", {}).resolution == 40  # chosen
    assert side("mnist", "resnet-gan") == 32  # the family's own default (its data config's)


def test_preset_setting_reports_only_what_a_preset_sets() -> None:
    from atelier.models.registry import preset_setting

    assert preset_setting("flow-cifar", "resolution") == 32 and preset_setting("flow-cifar", "channels") == 3
    assert preset_setting("flow-cifar", "width") is None  # 16: the family's own default, not the preset's choice
    assert preset_setting("flow", "resolution") is None  # the family's own default: not the preset's choice
    assert preset_setting("flow-cifar", "no_such_field") is None


# ------------------------------------------------------------------------------------ sample quality


def _features(images: torch.Tensor) -> np.ndarray:
    """(N, 1, 28, 28) in [-1, 1] -> 7x7 average-pooled pixels (49 dims)."""
    return torch.nn.functional.avg_pool2d(images.float(), 4).flatten(1).double().numpy()


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two sets of row vectors."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root_a @ cov_b @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def test_frechet_helper_on_known_gaussians() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 3))
    assert _frechet(x, x) == pytest.approx(0.0, abs=1e-9)
    # N(0, I) vs N(m, 4I): |m|^2 + 3 * (1 + 4 - 2 * 2) = |m|^2 + 3
    y = rng.normal(size=(20000, 3)) * 2 + np.array([1.0, 0.0, 2.0])
    assert _frechet(x, y) == pytest.approx(5.0 + 3.0, rel=0.05)


def test_short_training_run_measurably_improves_samples(tmp_path: Path) -> None:
    """About 30 s: a conditional DCGAN on digits beats its own initialisation by a wide margin."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    test_set = load_dataset("digits", resolution=28, split="test", progress=False)
    train_set = load_dataset("digits", resolution=28, split="train", progress=False)
    real_test, real_train = _features(to_float(test_set.images)), _features(to_float(train_set.images))
    pca = PCA(n_components=20, random_state=0).fit(real_test)
    classifier = LogisticRegression(max_iter=2000).fit(real_train, train_set.labels.numpy())
    assert classifier.score(real_test, test_set.labels.numpy()) > 0.9  # the judge itself is sound

    model_kwargs = dict(latent_dim=64, g_width=32, d_width=32)
    torch.manual_seed(0)  # what train_model does before building the model: the step-0 weights
    untrained = create_model("dcgan", resolution=28, channels=1, num_classes=10, **model_kwargs)
    result = train_model(
        "dcgan", data=DIGITS, out=tmp_path / "run", model_kwargs=model_kwargs, conditional=True,
        train=TrainConfig(batch_size=64, steps=500, lr=5e-4, seed=0, tensorboard=False, progress=False,
                          log_every=100, sample_every=10_000, checkpoint_every=10_000),
    )
    assert result.steps == 500
    trained = GAN.from_pretrained(tmp_path / "run")
    assert trained.config == untrained.config

    n = 1000
    labels = trained.default_labels(n).numpy()
    fd, agreement = {}, {}
    for name, model in (("trained", trained), ("untrained", untrained)):
        samples = model.sample(n, generator=torch.Generator().manual_seed(1))
        feats = _features(samples)
        fd[name] = _frechet(pca.transform(feats), pca.transform(real_test))
        agreement[name] = float((classifier.predict(feats) == labels).mean())
    reference = _frechet(pca.transform(real_train), pca.transform(real_test))
    print(f"FD trained {fd['trained']:.3f} untrained {fd['untrained']:.3f} (train vs test {reference:.3f}); "
          f"label agreement trained {agreement['trained']:.3f} untrained {agreement['untrained']:.3f}")
    assert fd["trained"] < 0.5 * fd["untrained"]
    assert agreement["trained"] > 0.5
    assert agreement["untrained"] < 0.3  # chance is 0.1: the judge is not fooled by untrained noise


def test_lr_schedule_factors_and_validation() -> None:
    from atelier.train.config import lr_factor

    assert lr_factor(0, 100, "constant") == 1.0 and lr_factor(99, 100, "constant") == 1.0
    assert lr_factor(0, 100, "cosine") == pytest.approx(1.0)
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(4, 100, "cosine", warmup_steps=10) == pytest.approx(0.5)  # warm-up first
    assert lr_factor(10, 110, "cosine", warmup_steps=10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cosine schedule needs"):
        TrainConfig(minutes=1.0, lr_schedule="cosine")
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(steps=3, lr_schedule="step")


def test_cosine_schedule_is_applied_to_the_optimisers(tmp_path) -> None:
    from atelier.train import DataConfig, train_model

    def run(steps: int, resume: bool = False):
        cfg = family_train_config("vae", steps=steps, lr_schedule="cosine", warmup_steps=2, batch_size=16,
                                     log_every=2, sample_every=100, checkpoint_every=100, tensorboard=False,
                                     progress=False, precision="fp32", iw_samples=0)
        return train_model("vae", data=DataConfig(), train=cfg, out=tmp_path / "run", resume=resume,
                           model_kwargs={"latent_dim": 4, "width": 4, "hidden": 8})

    run(6)
    from atelier.models.pretrained import latest_checkpoint
    from atelier.train.checkpoint import load_train_state

    state = load_train_state(latest_checkpoint(tmp_path / "run"))
    group = state["optimizers"]["vae"]["param_groups"][0]
    assert group["base_lr"] == pytest.approx(1e-3)
    assert group["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 3 / 4)))  # the factor at step 5


def test_a_run_saved_with_the_old_flat_training_config_resumes(tmp_path: Path) -> None:
    """Runs saved before the family configs were split carry every family's fields (a VAE run had
    augment="none", ada_target, lr_d): they still resume."""
    from atelier.train import resume_run

    out = tmp_path / "vae"
    train_model("vae", data=DIGITS, train=family_train_config("vae", steps=2, batch_size=16, progress=False,
                                                              tensorboard=False, iw_samples=0),
                out=out, model_kwargs=dict(width=8, hidden=0, latent_dim=4))
    ckpt = latest_checkpoint(out)
    config = json.loads((ckpt / "config.json").read_text())
    config["train"].update(augment="none", augment_policy=None, ada_target=0.6, ada_kimg=100.0, ada_interval=4,
                           lr_d=None)
    (ckpt / "config.json").write_text(json.dumps(config))
    assert resume_run(out, {"steps": 3}).steps == 3
