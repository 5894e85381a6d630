"""The colour VAE: the discretised logistic mixture decoder (shapes, images in range), short training
runs on RGB data at 32 and 64 px whose test bits/dim fall below 8, the CLI, and save/load."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier import create_model
from atelier.cli import main
from atelier.metrics.likelihood import vae_likelihood
from atelier.models import VAE, VAEConfig, load_pretrained
from atelier.objectives.logistic_mixture import logistic_mixture_mean
from atelier.objectives.vae import elbo_terms
from atelier.train import DataConfig, family_train_config, train_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**kw) -> VAE:
    torch.manual_seed(0)
    settings = dict(resolution=32, channels=3, likelihood="logistic_mixture", mixture_components=3, latent_dim=8,
                    width=8, hidden=0)
    return VAE(VAEConfig(**{**settings, **kw}))


def colour_folder(root: Path, size: int, n_train: int = 96, n_test: int = 24) -> Path:
    """``root/{train,test}/{disc,bar}/*.png``: a disc or bar on a background, each of one of 8 colours."""
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (8, 3))
    yy, xx = np.mgrid[:size, :size] / size
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            kind = ("disc", "bar")[i % 2]
            fg, bg = palette[rng.choice(8, 2, replace=False)]
            cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) if kind == "disc" else (np.abs(xx - cx) < r / 2)
            image = np.where(mask[..., None], fg, bg).astype(np.uint8)
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:03d}.png")
    return root


# -- the model --------------------------------------------------------------------------------------
@pytest.mark.parametrize("resolution,channels,components", [(32, 3, 3), (64, 3, 1), (28, 1, 5)])
def test_decoder_outputs_the_mixture_parameters_and_images_lie_in_range(resolution, channels, components) -> None:
    m = tiny(resolution=resolution, channels=channels, mixture_components=components)
    x = torch.rand(2, channels, resolution, resolution) * 2 - 1
    out = m(x)
    per_component = 1 + 2 * channels + channels * (channels - 1) // 2  # logit, means, scales, coefficients
    assert out["params"].shape == (2, components * per_component, resolution, resolution)
    assert m.config.output_channels() == components * per_component
    torch.testing.assert_close(m.to_image(out["params"]), logistic_mixture_mean(out["params"], channels))
    images = m.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, channels, resolution, resolution) and images.min() >= -1 and images.max() <= 1
    recon = m.reconstruct(torch.randint(0, 256, (2, channels, resolution, resolution), dtype=torch.uint8))
    assert recon.shape == (2, channels, resolution, resolution) and recon.abs().max() <= 1
    terms = elbo_terms(m, x)
    assert torch.isfinite(terms["elbo"]).all() and (terms["recon"] < 0).all()  # a probability: log p < 0


def test_preset_and_bad_settings() -> None:
    m = create_model("vae-cifar")
    cfg = m.config
    assert (cfg.resolution, cfg.channels, cfg.likelihood) == (32, 3, "logistic_mixture")
    assert cfg.output_channels() == 10 * cfg.mixture_components
    assert create_model("vae-cifar", mixture_components=2, width=8).config.output_channels() == 20
    with pytest.raises(ValueError, match="mixture_components"):
        VAEConfig(likelihood="logistic_mixture", mixture_components=0)
    with pytest.raises(ValueError, match="binarize"):
        VAEConfig(likelihood="logistic_mixture", binarize=True)


def test_save_and_load_keep_the_likelihood_and_its_scores(tmp_path: Path) -> None:
    m = tiny(mixture_components=4)
    directory = m.save_pretrained(tmp_path / "m")
    loaded = load_pretrained(directory)
    assert loaded.config == m.config and loaded.config.likelihood == "logistic_mixture"
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    a = vae_likelihood(m, images, iw_k=4, iw_n=3, seed=1)
    b = vae_likelihood(loaded, images, iw_k=4, iw_n=3, seed=1)
    assert a == b and math.isfinite(a["test_neg_elbo_bpd"])
    z = torch.randn(3, 8)
    assert torch.equal(m.generate(z), loaded.generate(z))


# -- training on RGB data ---------------------------------------------------------------------------
@pytest.mark.parametrize("resolution,steps", [(32, 120), (64, 100)])
def test_training_on_colour_images_lowers_the_loss_and_test_bits_per_dim_below_8(tmp_path, resolution, steps) -> None:
    data = colour_folder(tmp_path / "colour", resolution)
    train = family_train_config("vae", steps=steps, batch_size=16, lr=3e-3, log_every=5, sample_every=1000,
                                checkpoint_every=1000, tensorboard=False, progress=False, precision="fp32",
                                iw_samples=4, iw_images=8)
    result = train_model("vae", data=DataConfig(name=f"folder:{data}", resolution=resolution, channels=3),
                         train=train, out=tmp_path / "run", model_kwargs=dict(
                             likelihood="logistic_mixture", mixture_components=3, latent_dim=8, width=8, hidden=0))
    history = result.history
    assert history[-1]["neg_elbo"] < 0.85 * history[0]["neg_elbo"]
    assert history[-1]["bpd"] == pytest.approx(history[-1]["neg_elbo"] / (3 * resolution**2 * math.log(2)), rel=1e-4)
    m = json.loads((result.run_dir / "metrics.json").read_text())
    assert m["split"] == "test" and m["n"] == 24 and m["dims"] == 3 * resolution**2
    for key in ("test_neg_elbo_bpd", "test_iw_nll_bpd"):
        assert math.isfinite(m[key]) and 0 < m[key] < 8.0, (key, m[key])
    model = load_pretrained(result.run_dir)
    assert model.config.likelihood == "logistic_mixture" and model.config.channels == 3
    samples = model.sample(4)
    assert samples.shape == (4, 3, resolution, resolution) and samples.abs().max() <= 1


def test_cli_trains_a_colour_vae_and_prints_bits_per_dim(tmp_path, capsys) -> None:
    data = colour_folder(tmp_path / "colour", 32, n_train=16, n_test=8)
    out = tmp_path / "cli"
    rc = main(["train", "vae", "--data", f"folder:{data}", "--resolution", "32", "--channels", "3",
               "--likelihood", "logistic_mixture", "--mixture-components", "2", "--steps", "3", "--batch-size", "8",
               "--latent-dim", "4", "--width", "8", "--hidden", "0", "--no-progress", "--no-tensorboard",
               "--iw-samples", "2", "--iw-images", "4", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "bits/dim" in printed and "negative ELBO" in printed
    saved = json.loads((out / "config.json").read_text())["model"]["config"]
    assert saved["likelihood"] == "logistic_mixture" and saved["mixture_components"] == 2
