"""DiffAugment and ADA: the ops, the controller, and GAN training with each (API, CLI, resume)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from atelier.augment.ada import ADA_OPS, ADAController, ADAPipe
from atelier.augment.diffaugment import (
    DiffAugment,
    apply_cutout,
    apply_translation,
    diff_augment,
    parse_policy,
    sample_cutout,
    sample_translation,
)
from atelier.cli import main
from atelier.train import DataConfig, GANTrainConfig, train_model
from atelier.models.pretrained import latest_checkpoint
from atelier.train.checkpoint import load_train_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(g_width=8, d_width=8, latent_dim=16)


def images(b: int = 6, c: int = 1, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------- DiffAugment


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_diffaugment_keeps_shape_and_dtype_and_changes_the_images(policy: str, channels: int) -> None:
    x = images(c=channels)
    out = DiffAugment(policy)(x, generator=gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    if "color" not in policy:  # geometric ops only move pixels or fill with 0: the range is kept
        assert out.min() >= -1 and out.max() <= 1
    else:  # colour is not clamped (as in the paper), but bounded: brightness +-0.5, saturation x2, contrast x1.5
        assert out.abs().max() < 7


def test_empty_policy_is_the_identity() -> None:
    x = images()
    for policy in ("", "none"):
        assert DiffAugment(policy)(x, generator=gen()) is x
    assert diff_augment(x, "") is x


def test_translation_shifts_whole_pixels_and_fills_the_border() -> None:
    x = images(b=2, size=8)
    params = {"dy": torch.tensor([2, 0]), "dx": torch.tensor([0, -3])}
    out = apply_translation(x, params)
    assert torch.equal(out[0, :, 2:], x[0, :, :-2]) and torch.equal(out[0, :, :2], torch.zeros(1, 2, 8))
    assert torch.equal(out[1, :, :, :-3], x[1, :, :, 3:]) and torch.equal(out[1, :, :, -3:], torch.zeros(1, 8, 3))
    p = sample_translation(100, 16, 16, 0.125, gen())
    assert p["dy"].abs().max() == 2 and p["dx"].abs().max() == 2  # round(16 / 8) either way


def test_cutout_blanks_a_half_size_square() -> None:
    x = images(b=50, size=16) * 0.5 + 1.5  # in (1, 2): nothing is 0 before the cut-out
    params = sample_cutout(50, 16, 16, 0.5, gen())
    out = apply_cutout(x, params)
    zeros = (out == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() > 0  # an 8x8 square, sometimes cut by the border
    assert torch.equal(out[out != 0], x[out != 0])


def test_diffaugment_is_reproducible_from_the_generator() -> None:
    x, aug = images(), DiffAugment()
    a, b = aug(x, generator=gen(3)), aug(x, generator=gen(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, generator=gen(4)))
    params = aug.sample(x.shape, gen(3))
    assert torch.equal(aug.apply(x, params), a)  # sampler + pure function replay the same draw


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_gradients_flow_through_diffaugment(policy: str) -> None:
    x = images(c=3).requires_grad_(True)
    weights = torch.randn(x.shape, generator=gen(1))
    (DiffAugment(policy)(x, generator=gen()) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_policy_parsing_rejects_unknown_and_repeated_ops() -> None:
    assert parse_policy(" color , cutout ") == ("color", "cutout")
    with pytest.raises(ValueError, match="unknown augmentation"):
        DiffAugment("colour")
    with pytest.raises(ValueError, match="twice"):
        DiffAugment("color,color")


# ------------------------------------------------------------------------------------------------- ADA


def test_ada_at_p0_is_the_identity_and_at_p1_changes_every_image() -> None:
    x = images(b=16, c=3)
    pipe = ADAPipe(",".join(ADA_OPS))
    assert pipe(x, 0.0, generator=gen()) is x
    params = pipe.sample(x.shape, 0.0, gen())
    assert torch.equal(pipe.apply(x, params), x)  # nothing drawn -> every row exactly as it was
    out = pipe(x, 1.0, generator=gen())
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert all(not torch.equal(out[i], x[i]) for i in range(16))


def test_ada_applies_each_op_to_about_a_fraction_p_of_the_images() -> None:
    x = images(b=400, size=8)
    pipe = ADAPipe("brightness")
    out = pipe(x, 0.3, generator=gen())
    changed = (out != x).flatten(1).any(1).float().mean().item()
    assert 0.22 < changed < 0.38
    params = ADAPipe("xint,scale").sample(x.shape, 0.3, gen())
    assert 0.4 < params["warp"].float().mean().item() < 0.6  # 1 - 0.7^2, less the zero integer shifts


def test_ada_integer_translation_moves_whole_pixels() -> None:
    x = images(b=8)
    pipe = ADAPipe("xint")
    params = pipe.sample(x.shape, 1.0, gen(5))
    out = pipe.apply(x, params)
    for i in range(8):
        tx, ty = (int(v) for v in params["matrix"][i, :2, 2])
        # output (row, col) samples input (row + ty, col + tx): compare the part inside both
        src = x[i, :, max(ty, 0):16 + min(ty, 0), max(tx, 0):16 + min(tx, 0)]
        dst = out[i, :, max(-ty, 0):16 + min(-ty, 0), max(-tx, 0):16 + min(-tx, 0)]
        assert torch.allclose(src, dst, atol=1e-5)


def test_ada_without_flips_by_default_and_with_them_on_request() -> None:
    assert "xflip" not in ADAPipe().ops and "rotate90" not in ADAPipe().ops
    x = images(b=64)
    pipe = ADAPipe("xflip")
    params = pipe.sample(x.shape, 1.0, gen())
    out = pipe.apply(x, params)
    flipped = params["warp"]
    assert 0 < flipped.sum() < 64  # half of them, at p = 1
    assert torch.allclose(out[flipped], x[flipped].flip(-1), atol=1e-5)
    assert torch.equal(out[~flipped], x[~flipped])


@pytest.mark.parametrize("channels", [1, 3])
def test_gradients_flow_through_ada(channels: int) -> None:
    x = images(c=channels).requires_grad_(True)
    weights = torch.randn(x.shape, generator=gen(1))
    (ADAPipe(",".join(ADA_OPS))(x, 0.8, generator=gen()) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_ada_is_reproducible_and_keeps_bf16() -> None:
    x, pipe = images(), ADAPipe()
    assert torch.equal(pipe(x, 0.5, generator=gen(2)), pipe(x, 0.5, generator=gen(2)))
    assert pipe(x.bfloat16(), 1.0, generator=gen()).dtype == torch.bfloat16


def test_ada_rejects_unknown_ops() -> None:
    with pytest.raises(ValueError, match="unknown augmentation"):
        ADAPipe("xint,shear")


# ----------------------------------------------------------------------------------- ADA controller


def scripted_logits(fraction_positive: float, n: int = 64) -> torch.Tensor:
    """D(real) logits of which a given fraction is positive (a multiple of 1/n)."""
    k = round(fraction_positive * n)
    assert k == fraction_positive * n
    return torch.cat([torch.full((k,), 2.5), torch.full((n - k,), -1.5)])


def test_controller_p_rises_when_d_overfits_and_falls_when_not() -> None:
    ctl = ADAController(target=0.6, interval=4, kimg=1.0)  # 256 images per adjustment: p moves 0.256
    assert ctl.p == 0.0
    adjusted = [ctl.update(scripted_logits(0.9375)) for _ in range(4)]
    assert adjusted == [False, False, False, True]
    assert ctl.rt == 0.875 and ctl.p == pytest.approx(0.256)  # E[sign] = 0.9375 - 0.0625 > 0.6: overfitting
    for _ in range(4):
        ctl.update(scripted_logits(0.9375))
    assert ctl.p == pytest.approx(0.512)
    for _ in range(4):  # E[sign] = 0.5625 - 0.4375 < 0.6: D is no longer sure of the training images
        ctl.update(scripted_logits(0.5625))
    assert ctl.rt == 0.125 and ctl.p == pytest.approx(0.256)
    for _ in range(40):
        ctl.update(scripted_logits(0.5))
    assert ctl.p == 0.0  # clamped below
    for _ in range(400):
        ctl.update(scripted_logits(1.0))
    assert ctl.p == ctl.max_p < 1.0  # and above


def test_controller_step_size_follows_kimg_and_batch() -> None:
    ctl = ADAController(interval=2, kimg=100.0)
    for _ in range(2):
        ctl.update(scripted_logits(1.0, n=32))
    assert ctl.p == pytest.approx(64 / 100_000)


def test_controller_state_round_trips_through_json() -> None:
    a = ADAController(interval=4, kimg=1.0)
    for _ in range(6):  # one adjustment and half an interval
        a.update(scripted_logits(0.875))
    state = json.loads(json.dumps(a.state_dict()))
    b = ADAController(interval=4, kimg=1.0)
    b.load_state_dict(state)
    assert b.p == a.p and b.rt == a.rt and b.state_dict() == a.state_dict()
    for _ in range(2):
        a.update(scripted_logits(0.25))
        b.update(scripted_logits(0.25))
    assert b.p == a.p and b.rt == a.rt


def test_controller_validates_its_settings() -> None:
    with pytest.raises(ValueError, match="target"):
        ADAController(target=1.5)
    with pytest.raises(ValueError, match="interval"):
        ADAController(interval=0)


# ------------------------------------------------------------------------------------------- training


def small(**kw) -> GANTrainConfig:
    base = dict(batch_size=16, tensorboard=False, progress=False, log_every=1, sample_every=1000,
                checkpoint_every=1000)
    return GANTrainConfig(**{**base, **kw})


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]


def test_config_validates_augment_settings() -> None:
    with pytest.raises(ValueError, match="augment must be one of"):
        GANTrainConfig(augment="mixup")
    with pytest.raises(ValueError, match="unknown augmentation"):
        GANTrainConfig(augment="diffaugment", augment_policy="color,rotate")
    with pytest.raises(ValueError, match="needs augment"):
        GANTrainConfig(augment_policy="color")
    with pytest.raises(ValueError, match="ada_kimg"):
        GANTrainConfig(augment="ada", ada_kimg=0)
    GANTrainConfig(augment="ada", augment_policy="xint,brightness")


@pytest.mark.parametrize("mode, conditional", [("diffaugment", False), ("ada", True)])
def test_gan_trains_with_augmentation(tmp_path: Path, mode: str, conditional: bool) -> None:
    # ada_kimg tiny so that p moves within a few steps; target -1 < r_t: p can only rise
    cfg = small(steps=4, augment=mode, ada_kimg=0.1, ada_interval=1, ada_target=-0.99)
    result = train_model("dcgan", data=DataConfig(), train=cfg, out=tmp_path / mode, model_kwargs=TINY,
                         conditional=conditional)
    assert result.steps == 4
    hist = history(tmp_path / mode)
    assert all(math.isfinite(h["loss_d"]) and -1 <= h["rt"] <= 1 for h in hist)
    if mode == "ada":
        assert [h["aug_p"] for h in hist][0] == 0.0 and hist[-1]["aug_p"] > 0  # p used at each step
        state = load_train_state(latest_checkpoint(tmp_path / mode))["step_state"]
        assert state["ada"]["p"] > hist[-1]["aug_p"]  # the update after the last step is saved too
    else:
        assert "aug_p" not in hist[-1]


def test_ada_resume_restores_p_exactly(tmp_path: Path) -> None:
    kw = dict(augment="ada", ada_kimg=0.05, ada_interval=3, ada_target=0.0)
    a, b = tmp_path / "a", tmp_path / "b"
    train_model("dcgan", data=DataConfig(), train=small(steps=8, **kw), out=a, model_kwargs=TINY)
    train_model("dcgan", data=DataConfig(), train=small(steps=4, **kw), out=b, model_kwargs=TINY)
    saved = load_train_state(latest_checkpoint(b))["step_state"]["ada"]
    assert saved["calls"] == 1 and saved["count"] == 16  # part of an interval is saved too
    train_model("dcgan", data=DataConfig(), train=small(steps=8, **kw), out=b, model_kwargs=TINY, resume=True)
    state_a = load_train_state(latest_checkpoint(a))["step_state"]
    state_b = load_train_state(latest_checkpoint(b))["step_state"]
    assert state_a["ada"] == state_b["ada"] and state_a["ada"]["p"] > 0
    assert torch.equal(state_a["aug_rng"], state_b["aug_rng"])
    assert [h["aug_p"] for h in history(a)] == [h["aug_p"] for h in history(b)]
    assert [h["loss_d"] for h in history(a)] == [h["loss_d"] for h in history(b)]


def test_vae_rejects_augment(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="GAN"):
        train_model("vae", data=DataConfig(), train=small(steps=1, augment="diffaugment"), out=tmp_path / "v",
                    model_kwargs=dict(width=8, hidden=0, latent_dim=4))


CLI_TINY = ["--data", "digits", "--batch-size", "16", "--g-width", "8", "--d-width", "8", "--latent-dim", "16",
            "--no-tensorboard", "--no-progress", "--log-every", "1"]


def test_cli_train_gan_with_ada_then_resume(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "gan", *CLI_TINY, "--out", str(out), "--steps", "3", "--augment", "ada",
                 "--ada-kimg", "0.1", "--ada-interval", "1", "--ada-target", "-0.99"]) == 0
    config = json.loads((out / "config.json").read_text())["train"]
    assert config["augment"] == "ada" and config["ada_kimg"] == 0.1 and config["ada_interval"] == 1
    p3 = load_train_state(latest_checkpoint(out))["step_state"]["ada"]["p"]
    assert p3 > 0
    assert main(["train", "gan", "--out", str(out), "--resume", "--steps", "4", "--no-progress"]) == 0
    hist = history(out)
    assert [h["step"] for h in hist] == [1, 2, 3, 4] and hist[3]["aug_p"] == p3  # resumed at exactly that p


def test_cli_diffaugment_policy_and_errors(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "gan", *CLI_TINY, "--out", str(out), "--steps", "2", "--augment", "diffaugment",
                 "--augment-policy", "translation,cutout"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["augment_policy"] == "translation,cutout"
    capsys.readouterr()
    assert main(["train", "gan", *CLI_TINY, "--out", str(tmp_path / "bad"), "--steps", "2", "--augment",
                 "diffaugment", "--augment-policy", "rotate"]) == 2
    assert "unknown augmentation" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # VAEs have no discriminator: the flag does not exist there
        main(["train", "vae", "--out", str(tmp_path / "vae"), "--augment", "ada"])
