"""The GAN family: DCGAN-style generator and discriminator, one D then one G update per batch,
DiffAugment/ADA in front of the discriminator for little data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import annotated_types as at
import torch

from atelier.config import Count, Positive
from atelier.models.ema import ema_decay_at, ema_update
from atelier.models.gan import GAN
from atelier.models.registry import Family, register_family
from atelier.objectives.gan import discriminator_loss, generator_loss
from atelier.train.batches import Batch
from atelier.train.config import DataConfig, GenerativeTrainConfig
from atelier.train.distributed import DistContext
from atelier.train.steps.base import GenerativeStep, all_reduce_sum, make_adam, prepare


@dataclass
class GANTrainConfig(GenerativeTrainConfig):
    """GAN training: the DCGAN recipe (Adam 2e-4, beta1 0.5, batch 64, the base defaults), plus what the
    discriminator sees, augmented, for training on little data."""

    lr_d: Positive | None = None  # the discriminator's learning rate (default: lr)
    augment: Literal["none", "diffaugment", "ada"] = "none"  # augment what the discriminator sees (real and
    # fake), for little data: diffaugment (Zhao et al. 2020) or ada (adaptive strength p, Karras et al. 2020)
    augment_policy: str | None = None  # comma-separated ops; diffaugment: color,translation,cutout (default:
    # all three); ada: any of xflip,rotate90,xint,scale,rotate,aniso,xfrac,brightness,contrast,saturation
    # (default: all but xflip,rotate90)
    ada_target: Annotated[float, at.Interval(gt=-1.0, lt=1.0)] = 0.6  # ada: the r_t = E[sign(D(real))] that p is steered to
    ada_kimg: Annotated[float, at.Interval(gt=0.0, le=10**6)] = 100.0  # ada: thousands of real images for p to go from 0 to 1 (the paper: 500)
    ada_interval: Count = 4  # ada: steps between adjustments of p

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.augment_policy is not None:
            if self.augment == "none":
                raise ValueError("augment_policy needs augment 'diffaugment' or 'ada'")
            from atelier.augment.ada import ADA_OPS
            from atelier.augment.diffaugment import DIFFAUGMENT_OPS, parse_policy

            parse_policy(self.augment_policy, DIFFAUGMENT_OPS if self.augment == "diffaugment" else ADA_OPS)


class GANStep(GenerativeStep):
    """One discriminator update then one generator update per batch (Goodfellow et al. 2014).

    The fake batch is generated once: detached for the discriminator update, then scored by the
    updated discriminator for the generator update, so each step runs the generator forward once.
    With ``cfg.augment`` (DiffAugment or ADA) the discriminator sees real and fake images only
    augmented, with a fresh draw for each of its three passes (real, fake, the generator's fake).
    """

    supports_augment = True

    def __init__(self, model: GAN, cfg: GANTrainConfig, device: torch.device, dist: DistContext | None = None) -> None:
        dist = self._setup(model, cfg, device, dist)
        self.G = prepare(model.generator, cfg, device, dist)
        self.D = prepare(model.discriminator, cfg, device, dist)
        # The generator's update scores fakes with the bare discriminator: its weights are frozen then,
        # so there is nothing to all-reduce, and going around DDP keeps its reducer in step.
        self.D_frozen = prepare(model.discriminator, cfg, device, DistContext()) if dist.enabled else self.D
        self.optimizers = {
            "generator": make_adam(model.generator.parameters(), cfg.lr, cfg.betas, device),
            "discriminator": make_adam(model.discriminator.parameters(), cfg.lr_d or cfg.lr, cfg.betas, device),
        }
        # Latents come from a private generator so they do not depend on other uses of the global RNG.
        self.rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.loss = model.config.loss
        self.separate_d_passes = model.discriminator.uses_batch_norm
        self._setup_augment(cfg, dist)

    def _setup_augment(self, cfg: GANTrainConfig, dist: DistContext) -> None:
        """DiffAugment or ADA in front of the discriminator: its own RNG (per rank), ADA's controller."""
        self.augment, self.ada = None, None
        if cfg.augment == "none":
            return
        from atelier.augment.ada import DEFAULT_ADA_POLICY, ADAController, ADAPipe
        from atelier.augment.diffaugment import DEFAULT_POLICY, DiffAugment

        if cfg.augment == "diffaugment":
            self.augment = DiffAugment(cfg.augment_policy or DEFAULT_POLICY)
        else:
            self.augment = ADAPipe(cfg.augment_policy or DEFAULT_ADA_POLICY)
            self.ada = ADAController(target=cfg.ada_target, interval=cfg.ada_interval, kimg=cfg.ada_kimg,
                                     reduce=all_reduce_sum if dist.enabled else None)
        self.aug_rng = torch.Generator().manual_seed(cfg.seed + 2 + 1000 * dist.rank)

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        """What the discriminator sees of ``images``: a fresh augmentation per call (labels stay as they are)."""
        if self.ada is not None:
            return self.augment(images, self.ada.p, generator=self.aug_rng)
        if self.augment is not None:
            return self.augment(images, generator=self.aug_rng)
        return images

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.augment is not None:
            state["aug_rng"] = self.aug_rng.get_state()
        if self.ada is not None:
            state["ada"] = self.ada.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.augment is not None and "aug_rng" in state:  # absent when resuming a run without augment
            self.aug_rng.set_state(state["aug_rng"])
        if self.ada is not None and "ada" in state:
            self.ada.load_state_dict(state["ada"])

    def _score(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None):
        """Discriminator logits for the real and the fake batch.

        With batch norm, real and fake go through separate passes (as in DCGAN: each batch is
        normalised by its own statistics); without it, one pass over both is identical and faster."""
        if self.separate_d_passes:
            return self.D(real, labels), self.D(fake, labels)
        both_labels = torch.cat([labels, labels]) if labels is not None else None
        logits = self.D(torch.cat([real, fake]), both_labels)
        return logits[: real.shape[0]], logits[real.shape[0] :]

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        model, cfg = self.model, self.cfg
        real, labels = batch.images, batch.labels if model.conditional else None
        z = torch.randn(real.shape[0], model.config.latent_dim, generator=self.rng).to(self.device)
        opt_g, opt_d = self.optimizers["generator"], self.optimizers["discriminator"]

        # Discriminator: real -> 1, fake -> 0. With DiffAugment/ADA it sees both only augmented.
        p = self.ada.p if self.ada is not None else None  # the p this step runs with (for the log)
        with self.autocast():
            fake = self.G(z, labels)
            d_real, d_fake = self._score(self._augment(real), self._augment(fake.detach()), labels)
            loss_d = discriminator_loss(d_real, d_fake, self.loss)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # Generator: make the updated discriminator call the fakes real. D's weights need no gradient.
        model.discriminator.requires_grad_(False)
        with self.autocast():
            loss_g = generator_loss(self.D_frozen(self._augment(fake), labels), self.loss)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        model.discriminator.requires_grad_(True)

        ema_update(model.generator_ema, model.generator, ema_decay_at(step, cfg.ema_decay))
        return self._logs(loss_d, loss_g.detach(), d_real, d_fake, p)

    def _logs(self, loss_d: torch.Tensor, loss_g: torch.Tensor, d_real: torch.Tensor, d_fake: torch.Tensor,
              p: float | None) -> dict[str, torch.Tensor]:
        """A step's log values; ADA's strength ``p`` is then updated from this step's real logits."""
        logs = {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g,
            "d_real": d_real.detach().float().mean(),
            "d_fake": d_fake.detach().float().mean(),
            # ADA's overfitting heuristic, logged in every mode: near 1, D is sure of every training image
            "rt": d_real.detach().float().sign().mean(),
        }
        if self.ada is not None:
            self.ada.update(d_real)
            logs["aug_p"] = torch.tensor(p, dtype=torch.float64)
        return logs


FAMILY = register_family(Family(
    name="gan", model_class=GAN, step_class=GANStep, train_config=GANTrainConfig, data_config=DataConfig,
    default_model="dcgan", summary="train a DCGAN (class-conditional with --conditional)", conditional=True,
))
