"""The VAE family: one Adam step on the beta-weighted negative ELBO; the test likelihood at the end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import torch

from atelier.data import DataError, load_dataset
from atelier.io import atomic_write_json
from atelier.metrics.likelihood import bits_per_dim, bits_per_dim_basis
from atelier.models.ema import ema_decay_at
from atelier.models.registry import Family, register_family
from atelier.models.vae import VAE
from atelier.objectives.vae import kl_weight, log_likelihood, targets
from atelier.train.batches import Batch
from atelier.train.config import DataConfig, GenerativeTrainConfig
from atelier.train.distributed import DistContext
from atelier.train.steps.base import GenerativeStep, make_adam, prepare


@dataclass
class VAETrainConfig(GenerativeTrainConfig):
    """VAE training: plain Adam (1e-3, beta1 0.9) on larger batches than a GAN's; the test split's
    negative ELBO and importance-weighted NLL (nats per image, and bits/dim where the likelihood is a
    probability of 8-bit values or a density) are measured at the end of the run."""

    batch_size: int = 128
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's beta1 and beta2
    iw_samples: Annotated[int, at.Interval(ge=0, le=100_000)] = 100  # k of the importance-weighted test NLL in metrics.json (0: skip)
    iw_images: Annotated[int, at.Interval(ge=1, le=10**6)] = 1000  # test images the importance-weighted NLL is averaged over


class VAEStep(GenerativeStep):
    """One Adam step on the beta-weighted negative ELBO (mean over the batch, nats per image).

    Logs the unweighted terms too, so runs with different beta or warm-up compare on one scale:
    ``neg_elbo`` = ``recon_nll`` + ``kl``."""

    def __init__(self, model: VAE, cfg: VAETrainConfig, device: torch.device, dist: DistContext | None = None) -> None:
        dist = self._setup(model, cfg, device, dist)
        self.net = prepare(model, cfg, device, dist)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizers = {"vae": make_adam(params, cfg.lr, cfg.betas, device)}
        # Posterior noise (and binarisation) from a private generator, independent of the global RNG.
        self.rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.bpd_width = bits_per_dim_basis(model.config)  # (bin width or None, text), or None: no bits/dim

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        model, mc = self.model, self.model.config
        x, labels = batch.images, batch.labels if model.conditional else None
        target = targets(x, mc.likelihood, binarize=mc.binarize, generator=self.rng)
        beta = kl_weight(step, mc.beta, mc.kl_warmup_steps)
        with self.autocast():
            out = self.net(x, labels, generator=self.rng)
        recon = log_likelihood(out["params"], target, mc.likelihood, model.log_sigma)
        kl = model.kl_term(out["mean"], out["logvar"], out["z"])
        loss = (beta * kl - recon).mean()
        opt = self.optimizers["vae"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.update_ema(ema_decay_at(step, self.cfg.ema_decay))
        logs = {"loss": loss.detach(), "neg_elbo": (kl - recon).detach().mean(), "recon_nll": -recon.detach().mean(),
                "kl": kl.detach().mean(), "beta": torch.tensor(beta)}
        if mc.likelihood == "gaussian":
            logs["sigma"] = model.log_sigma.detach().exp()
        if self.bpd_width is not None:  # the training negative ELBO in bits/dim (see metrics.likelihood)
            logs["bpd"] = bits_per_dim(logs["neg_elbo"], x[0].numel(), bin_width=self.bpd_width[0])
        return logs

    def finish(self, run_dir: Path, data: DataConfig, train: VAETrainConfig) -> dict[str, Any]:
        return held_out_metrics(self.model, data, train, run_dir)


def held_out_metrics(model: VAE, data: DataConfig, train: VAETrainConfig, run_dir: Path) -> dict[str, Any]:
    """The negative ELBO (and importance-weighted NLL) on the test split, else the training data, in nats
    per image and (for the Gaussian and logistic mixture likelihoods) bits/dim; written to
    ``run_dir/metrics.json``."""
    from atelier.metrics.likelihood import vae_likelihood

    split = "test"
    try:
        held_out = load_dataset(data.name, resolution=data.resolution, split="test", data_dir=data.data_dir,
                                channels=data.channels, verify=data.verify, progress=False)
    except DataError:  # a folder without train/ and test/: score the training images, and say so
        split = data.split
        held_out = load_dataset(data.name, resolution=data.resolution, split=split, data_dir=data.data_dir,
                                channels=data.channels, verify=data.verify, progress=False)
    metrics = vae_likelihood(model, held_out.images, held_out.labels, iw_k=train.iw_samples, iw_n=train.iw_images,
                             seed=train.seed, progress=train.progress)
    metrics = {**metrics, "split": split, "dataset": held_out.name}
    atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics


FAMILY = register_family(Family(
    name="vae", model_class=VAE, step_class=VAEStep, train_config=VAETrainConfig, data_config=DataConfig,
    default_model="vae", summary="train a (beta-, conditional) convolutional VAE",
    conditional=True,
))
