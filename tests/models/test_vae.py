"""The VAE family: ELBO pieces on hand-computed cases, the reparameterisation, the importance-weighted
bound, configurations, training (loss falls, beats an untrained model), resume and the CLI."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from atelier import create_model, list_models
from atelier.cli import main
from atelier.data import load_dataset
from atelier.metrics.likelihood import vae_likelihood
from atelier.models import VAE, VAEConfig, load_pretrained
from atelier.objectives.vae import (
    elbo_terms,
    importance_weighted_bound,
    kl_standard_normal,
    kl_weight,
    log_likelihood,
)
from atelier.train import DataConfig, family_train_config, train_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**kw) -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig(**{"latent_dim": 4, "width": 8, "hidden": 32, **kw}))


# -- the ELBO's pieces on hand-computed cases ------------------------------------------------------
def test_bernoulli_and_gaussian_log_likelihood_by_hand() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = 0.5 and 0.75
    target = torch.tensor([[1.0, 0.0]])
    assert log_likelihood(logits, target, "bernoulli").item() == pytest.approx(math.log(0.5) + math.log(0.25))
    mean, x, log_sigma = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 1.0]]), torch.tensor(math.log(0.5))
    by_hand = sum(-0.5 * ((xi - mi) / 0.5) ** 2 - 0.5 * math.log(2 * math.pi) - math.log(0.5)
                  for xi, mi in ((0.5, 0.0), (1.0, 1.0)))
    assert log_likelihood(mean, x, "gaussian", log_sigma).item() == pytest.approx(by_hand)


def test_kl_by_hand_and_of_the_prior_against_itself() -> None:
    mean, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    assert kl_standard_normal(mean, logvar).item() == pytest.approx(0.5 + 0.5 * (1 - math.log(2.0)))
    assert kl_standard_normal(torch.zeros(3, 5), torch.zeros(3, 5)).abs().max().item() == 0.0
    assert kl_standard_normal(mean, logvar, per_dim=True).shape == (1, 2)


def test_elbo_is_reconstruction_minus_kl_on_a_fixed_case() -> None:
    @dataclass
    class Cfg:
        likelihood: str = "bernoulli"

    class Fixed(torch.nn.Module):  # a "model" whose encoder and decoder outputs are known
        config = Cfg()
        log_sigma = torch.tensor(0.0)

        def forward(self, x, labels=None, generator=None):
            return {"params": torch.tensor([[0.0, math.log(3.0)]]), "mean": torch.tensor([[1.0, 0.0]]),
                    "logvar": torch.tensor([[0.0, math.log(2.0)]]), "z": torch.zeros(1, 2)}

    x = torch.tensor([[1.0, -1.0]])  # intensities (x + 1) / 2 = [1, 0]
    t = elbo_terms(Fixed(), x, beta=4.0)
    recon = math.log(0.5) + math.log(0.25)
    kl = 0.5 + 0.5 * (1 - math.log(2.0))
    assert t["recon"].item() == pytest.approx(recon) and t["kl"].item() == pytest.approx(kl)
    assert t["elbo"].item() == pytest.approx(recon - kl) and t["loss"].item() == pytest.approx(4 * kl - recon)


def test_reparameterised_samples_have_the_posterior_moments() -> None:
    mean, logvar = torch.tensor([1.5, -2.0, 0.0]), torch.tensor([0.0, math.log(0.25), math.log(4.0)])
    z = VAE.reparameterize(mean.expand(200_000, 3), logvar.expand(200_000, 3), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), mean, atol=0.02, rtol=0)
    torch.testing.assert_close(z.var(0), logvar.exp(), atol=0, rtol=0.02)
    # and gradients reach mean and logvar
    m, lv = mean.clone().requires_grad_(), logvar.clone().requires_grad_()
    VAE.reparameterize(m, lv).sum().backward()
    assert m.grad is not None and lv.grad is not None


def test_kl_warmup_ramps_to_beta() -> None:
    assert kl_weight(0, 4.0, 0) == 4.0
    assert kl_weight(0, 2.0, 10) == pytest.approx(0.2) and kl_weight(4, 2.0, 10) == pytest.approx(1.0)
    assert kl_weight(50, 2.0, 10) == 2.0


# -- models -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("resolution,channels,classes,likelihood", [
    (28, 1, 0, "bernoulli"), (32, 3, 5, "gaussian"), (64, 1, 0, "gaussian"), (128, 3, 0, "bernoulli")])
def test_shapes_for_every_resolution(resolution, channels, classes, likelihood) -> None:
    m = tiny(resolution=resolution, channels=channels, num_classes=classes, likelihood=likelihood)
    x = torch.rand(2, channels, resolution, resolution) * 2 - 1
    labels = torch.tensor([0, classes - 1]) if classes else None
    out = m(x, labels)
    assert out["params"].shape == x.shape and out["mean"].shape == (2, 4)
    images = m.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, channels, resolution, resolution) and images.min() >= -1 and images.max() <= 1


def test_registry_presets_conditioning_and_bad_configs() -> None:
    assert {"vae", "beta-vae"} <= set(list_models())
    beta = create_model("beta-vae", width=8, hidden=16)
    assert beta.config.beta == 4.0 and beta.config.latent_dim == 10 and beta.family == "vae"
    cvae = tiny(num_classes=3)
    assert cvae.sample(4).shape == (4, 1, 28, 28)
    assert cvae.sample(2, labels=2).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="labels must lie"):
        cvae.sample(2, labels=3)
    with pytest.raises(ValueError, match="pass the images' labels"):
        cvae.encode_images(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="not class-conditional"):
        tiny().sample(2, labels=1)
    for bad in ({"likelihood": "poisson"}, {"resolution": 30}, {"binarize": True, "likelihood": "gaussian"},
                {"sigma": 0.0}, {"channels": 2}):
        with pytest.raises(ValueError):
            VAEConfig(**bad)


def test_learned_and_fixed_sigma() -> None:
    assert tiny(likelihood="gaussian").log_sigma.requires_grad
    assert not tiny(likelihood="gaussian", learn_sigma=False).log_sigma.requires_grad
    assert not tiny().log_sigma.requires_grad  # bernoulli has no sigma to learn


# -- training ----------------------------------------------------------------------------------------
def quick_train(tmp_path: Path, steps: int, resume: bool = False, out: str = "run", **model_kw):
    train = family_train_config("vae", steps=steps, batch_size=64, log_every=10, sample_every=1000,
                                   checkpoint_every=10, tensorboard=False, progress=False, precision="fp32",
                                   iw_samples=10, iw_images=50)
    return train_model("vae", data=DataConfig(), train=train, out=tmp_path / out,
                       model_kwargs={"latent_dim": 8, "width": 8, "hidden": 64, **model_kw}, resume=resume)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vae")
    with pytest.MonkeyPatch.context():
        torch.set_num_threads(1)
        result = quick_train(tmp, 250, width=16, hidden=128)
    return result, load_pretrained(result.run_dir)


def test_training_lowers_the_loss_and_beats_an_untrained_model(trained) -> None:
    result, model = trained
    history = result.history
    assert history[-1]["neg_elbo"] < 0.7 * history[0]["neg_elbo"]
    assert history[-1]["neg_elbo"] == pytest.approx(history[-1]["recon_nll"] + history[-1]["kl"], rel=1e-5)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    for key in ("test_neg_elbo_nats", "test_iw_nll_nats", "test_recon_nats", "test_kl_nats"):
        assert math.isfinite(metrics[key])
    assert metrics["split"] == "test" and metrics["iw_k"] == 10 and metrics["iw_n"] == 50
    test = load_dataset("digits", split="test", progress=False)
    torch.manual_seed(0)
    untrained = VAE(model.config)
    assert metrics["test_neg_elbo_nats"] < 0.75 * vae_likelihood(untrained, test.images, iw_k=0)["test_neg_elbo_nats"]
    # A real baseline: every pixel an independent Bernoulli with the training set's mean intensity.
    p = (load_dataset("digits", split="train", progress=False).images.float() / 255).mean(0).clamp(1e-4, 1 - 1e-4)
    t = test.images.float() / 255
    independent_nll = -(t * p.log() + (1 - t) * (1 - p).log()).flatten(1).sum(1).mean().item()
    assert metrics["test_neg_elbo_nats"] < 0.9 * independent_nll


def test_importance_weighted_bound_is_above_the_elbo_and_tightens_with_k(trained) -> None:
    _, model = trained
    images = load_dataset("digits", split="test", progress=False).images[:40]
    x = images.float() / 127.5 - 1
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        elbo = torch.stack([elbo_terms(model, x, generator=g)["elbo"] for _ in range(50)]).mean(0)  # E[L_1]
        bounds = {k: importance_weighted_bound(model, x, k=k, generator=g).mean().item() for k in (1, 10, 100)}
    assert bounds[1] == pytest.approx(elbo.mean().item(), abs=1.0)  # L_1 is the ELBO (one sample's noise)
    assert elbo.mean().item() < bounds[10] < bounds[100]


def test_resume_equals_uninterrupted_training(tmp_path) -> None:
    straight = quick_train(tmp_path, 20, out="straight")
    quick_train(tmp_path, 10, out="split")
    resumed = quick_train(tmp_path, 20, resume=True, out="split")
    a = load_pretrained(straight.run_dir).state_dict()
    b = load_pretrained(resumed.run_dir).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_train_vae_then_sample(tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    rc = main(["train", "vae", "--steps", "12", "--latent-dim", "4", "--width", "8", "--hidden", "16", "--conditional",
               "--no-progress", "--no-tensorboard", "--iw-samples", "5", "--iw-images", "20", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "negative ELBO" in printed and "importance-weighted NLL" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["family"] == "vae" and config["model"]["config"]["num_classes"] == 10
    assert config["train"]["lr"] == 1e-3 and config["train"]["batch_size"] == 128  # the VAE's defaults
    assert main(["sample", str(out), "--n", "20", "--label", "3", "--out", str(tmp_path / "s.npz")]) == 0
    import numpy as np

    with np.load(tmp_path / "s.npz") as z:
        assert z["images"].shape == (20, 28, 28, 1) and z["images"].dtype == np.uint8
    assert main(["train", "vae", "--likelihood", "gaussian", "--binarize", "--steps", "1", "--out",
                 str(tmp_path / "bad")]) == 2


def test_averaged_networks_are_used_for_inference_and_swapped_back(trained) -> None:
    _, model = trained
    raw_encoder = model.encoder
    differs = any(not torch.equal(a, b) for a, b in zip(model.decoder.parameters(), model.decoder_ema.parameters()))
    assert differs  # training moved the raw weights away from their average
    with model.averaged():
        assert model.encoder is model.encoder_ema
        with model.averaged():  # nesting is harmless
            assert model.decoder is model.decoder_ema
    assert model.encoder is raw_encoder and "encoder" in dict(model.named_children())
    z = torch.randn(4, model.config.latent_dim)
    with torch.no_grad():
        by_ema = model.to_image(model.decoder_ema(z))
        by_raw = model.to_image(model.decoder(z))
    torch.testing.assert_close(model.generate(z), by_ema)
    torch.testing.assert_close(model.generate(z, use_ema=False), by_raw)


# -- the VampPrior ------------------------------------------------------------------------------------
def test_vamp_prior_is_a_normalised_mixture_of_pseudo_input_posteriors() -> None:
    m = tiny(prior="vamp", vamp_components=3, latent_dim=1)
    with torch.no_grad():
        mean, logvar = m.prior_components()  # (3, 1) each
        grid = torch.linspace(-30, 30, 60001).unsqueeze(1)
        density = m.log_prior(grid).exp()
    assert density.sum().item() * (60 / 60000) == pytest.approx(1.0, abs=1e-3)  # integrates to 1
    z = torch.tensor([[0.3]])
    by_hand = sum(math.exp(-0.5 * ((0.3 - mu) ** 2 / math.exp(lv) + lv + math.log(2 * math.pi)))
                  for mu, lv in zip(mean[:, 0].tolist(), logvar[:, 0].tolist())) / 3
    assert m.log_prior(z).exp().item() == pytest.approx(by_hand, rel=1e-5)


def test_vamp_prior_samples_come_from_its_components_and_training_runs(tmp_path) -> None:
    m = tiny(prior="vamp", vamp_components=1, latent_dim=2)
    with torch.no_grad(), m.averaged():
        mean, logvar = m.prior_components()
    z = m.sample_latents(50_000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), mean[0], atol=0.03, rtol=0)
    torch.testing.assert_close(z.var(0), logvar[0].exp(), atol=0, rtol=0.05)
    assert tiny().kl_term(torch.ones(2, 4), torch.zeros(2, 4), torch.zeros(2, 4)).tolist() == [2.0, 2.0]  # exact KL
    with pytest.raises(ValueError, match="VampPrior"):
        VAEConfig(prior="vamp", num_classes=10)
    result = quick_train(tmp_path, 20, out="vamp", prior="vamp", vamp_components=5)
    assert math.isfinite(result.metrics["test_neg_elbo_nats"]) and math.isfinite(result.metrics["test_iw_nll_nats"])
    assert load_pretrained(result.run_dir).sample(4).shape == (4, 1, 28, 28)
