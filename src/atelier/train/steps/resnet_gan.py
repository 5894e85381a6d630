"""The residual GAN family (SNGAN/BigGAN networks): the GAN step with ``n_dis`` discriminator updates
per generator update, the SNGAN recipe's defaults (hinge loss, Adam 2e-4 with betas (0, 0.9), EMA of
the generator), 32 px data by default, and DiffAugment/ADA as in the DCGAN family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import annotated_types as at
import torch

from atelier.models.resnet_gan import ResNetGAN
from atelier.models.registry import Family, register_family
from atelier.objectives.gan import discriminator_loss
from atelier.train.batches import Batch
from atelier.train.config import Beta, DataConfig
from atelier.train.distributed import DistContext
from atelier.train.steps.gan import GANStep, GANTrainConfig


@dataclass
class ResNetGANDataConfig(DataConfig):
    """As every image family's data config, at 32 px by default (CIFAR-10's size)."""

    resolution: Annotated[int, at.Interval(ge=4, le=4096)] = 32  # side of the square training images


@dataclass
class ResNetGANTrainConfig(GANTrainConfig):
    """SNGAN's recipe (Miyato et al. 2018; Adam 2e-4, betas (0, 0.9), batch 64, hinge loss from the
    model) with a generator update every ``n_dis`` discriminator updates, bf16 (where native) and
    channels-last by default (the fastest on CPUs: benchmarks/train_throughput.py), and the generator's
    EMA for sampling."""

    betas: tuple[Beta, Beta] = (0.0, 0.9)  # Adam's beta1 and beta2 (SNGAN: 0, 0.9)
    channels_last: bool = True  # channels-last memory format (faster for these networks on CPUs and GPUs)
    # 1 by measurement: after 5 minutes on CIFAR-10 (2 CPU cores) FID 2.98 with 1, 4.73 with 2 (cifar10-cnn
    # features; BENCHMARKS.md, "Choosing the residual GAN's settings"); long GPU runs of the papers use 2 to 5
    n_dis: Annotated[int, at.Interval(ge=1, le=100)] = 1  # discriminator updates per generator update: each
    # step updates D on one batch, and G on every n_dis-th step (SNGAN: 5, BigGAN: 2 to 4)


class ResNetGANStep(GANStep):
    """The :class:`GANStep` with ``n_dis`` discriminator steps per generator step.

    Every step takes one batch and updates the discriminator on it; every ``n_dis``-th step (steps
    n_dis - 1, 2 n_dis - 1, ...) is the GAN step proper, which also updates the generator (on the fakes
    the discriminator just saw) and its EMA copy. On the other steps the fakes are generated without
    gradients, and the logged generator loss is the last one computed.
    """

    def __init__(self, model: ResNetGAN, cfg: ResNetGANTrainConfig, device: torch.device,
                 dist: DistContext | None = None) -> None:
        super().__init__(model, cfg, device, dist)
        self.n_dis = cfg.n_dis
        self.last_loss_g = torch.zeros((), dtype=torch.float32)  # logged on the steps that do not update G

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        if (step + 1) % self.n_dis == 0:
            # the EMA warm-up (ema_decay_at) counts generator updates, which GANStep receives as its step
            logs = super().train_step(batch, step // self.n_dis)
            self.last_loss_g = logs["loss_g"].detach().float().cpu()
            return logs
        return self._discriminator_step(batch)

    def _discriminator_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """One discriminator update on ``batch`` against fakes made without gradients."""
        model = self.model
        real, labels = batch.images, batch.labels if model.conditional else None
        z = torch.randn(real.shape[0], model.config.latent_dim, generator=self.rng).to(self.device)
        p = self.ada.p if self.ada is not None else None
        with self.autocast():
            with torch.no_grad():
                fake = self.G(z, labels)
            d_real, d_fake = self._score(self._augment(real), self._augment(fake), labels)
            loss_d = discriminator_loss(d_real, d_fake, self.loss)
        opt_d = self.optimizers["discriminator"]
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        return self._logs(loss_d, self.last_loss_g, d_real, d_fake, p)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "last_loss_g": self.last_loss_g.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "last_loss_g" in state:
            self.last_loss_g = state["last_loss_g"].float()


FAMILY = register_family(Family(
    name="resnet-gan", model_class=ResNetGAN, step_class=ResNetGANStep, train_config=ResNetGANTrainConfig,
    data_config=ResNetGANDataConfig, default_model="resnet-gan",
    summary="train a residual GAN (SNGAN/BigGAN networks, 32-64 px colour; class-conditional with --conditional)",
    conditional=True,
))
