"""Per-family training steps. The trainer is model-agnostic; a step knows its family's update.

A step object owns the model, its optimisers and its private RNG, and exposes:

- ``train_step(batch, step) -> dict[str, Tensor]``: one update; scalar logs (losses first);
- ``preview(n, seed) -> Tensor``: images in [-1, 1] for sample grids (fixed by ``seed``);
- ``optimizers``: name -> optimiser, checkpointed by the trainer;
- ``state_dict()`` / ``load_state_dict()``: any further state to checkpoint (RNG, ADA p, ...).
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import torch
from torch import nn

from atelier.models.gan import GAN
from atelier.models.vae import VAE
from atelier.objectives.gan import discriminator_loss, generator_loss
from atelier.objectives.vae import kl_weight, log_likelihood, targets
from atelier.train.batches import Batch
from atelier.train.config import TrainConfig, resolve_precision
from atelier.train.distributed import DistContext
from atelier.train.ema import ema_decay_at, ema_update


class TrainStep(Protocol):
    model: nn.Module
    optimizers: dict[str, torch.optim.Optimizer]

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]: ...
    def preview(self, n: int, seed: int) -> torch.Tensor: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def make_adam(params, lr: float, betas: tuple[float, float], device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel (one kernel for all parameters) where this build has it."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):  # fused not supported for this device/dtype
        return torch.optim.Adam(params, lr=lr, betas=betas, foreach=True)


def autocast(cfg: TrainConfig, device: torch.device):
    if resolve_precision(cfg.precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare(module: nn.Module, cfg: TrainConfig, device: torch.device, dist: DistContext) -> nn.Module:
    """The callable used in training: DDP- and/or torch.compile-wrapped view of ``module``."""
    wrapped = dist.wrap(module, device)
    return torch.compile(wrapped) if cfg.compile else wrapped


class _GenerativeStep:
    """What every generative family's step shares: preview grids drawn from ``model.sample`` and a
    private RNG (``self.rng``) saved with the checkpoint."""

    model: nn.Module
    rng: torch.Generator
    supports_augment = False  # whether TrainConfig.augment (DiffAugment / ADA) means anything here

    def _setup(self, model: nn.Module, cfg: TrainConfig, device: torch.device,
               dist: DistContext | None) -> DistContext:
        """Keep model, config and device; move the model (channels-last if asked); return the DistContext."""
        if cfg.augment != "none" and not self.supports_augment:
            raise ValueError(f"augment={cfg.augment!r} augments what a GAN's discriminator sees; "
                             f"{type(self).__name__} has nothing to apply it to: train without --augment")
        self.model, self.cfg, self.device = model, cfg, device
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        return dist or DistContext()

    def preview(self, n: int, seed: int) -> torch.Tensor:
        return self.model.sample(n, generator=torch.Generator().manual_seed(seed))

    def preview_layout(self) -> int:
        """Columns of the preview grid: one per class for conditional models."""
        return self.model.config.num_classes if self.model.conditional else 8

    def preview_count(self) -> int:
        return 8 * self.preview_layout()

    def state_dict(self) -> dict:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.set_state(state["rng"])


class GANStep(_GenerativeStep):
    """One discriminator update then one generator update per batch (Goodfellow et al. 2014).

    The fake batch is generated once: detached for the discriminator update, then scored by the
    updated discriminator for the generator update, so each step runs the generator forward once.
    With ``cfg.augment`` (DiffAugment or ADA) the discriminator sees real and fake images only
    augmented, with a fresh draw for each of its three passes (real, fake, the generator's fake).
    """

    supports_augment = True

    def __init__(self, model: GAN, cfg: TrainConfig, device: torch.device, dist: DistContext | None = None) -> None:
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

    def _setup_augment(self, cfg: TrainConfig, dist: DistContext) -> None:
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
                                     reduce=_all_reduce_sum if dist.enabled else None)
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
        with autocast(cfg, self.device):
            fake = self.G(z, labels)
            d_real, d_fake = self._score(self._augment(real), self._augment(fake.detach()), labels)
            loss_d = discriminator_loss(d_real, d_fake, self.loss)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # Generator: make the updated discriminator call the fakes real. D's weights need no gradient.
        model.discriminator.requires_grad_(False)
        with autocast(cfg, self.device):
            loss_g = generator_loss(self.D_frozen(self._augment(fake), labels), self.loss)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        model.discriminator.requires_grad_(True)

        ema_update(model.generator_ema, model.generator, ema_decay_at(step, cfg.ema_decay))
        logs = {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real": d_real.detach().float().mean(),
            "d_fake": d_fake.detach().float().mean(),
            # ADA's overfitting heuristic, logged in every mode: near 1, D is sure of every training image
            "rt": d_real.detach().float().sign().mean(),
        }
        if self.ada is not None:
            self.ada.update(d_real)
            logs["aug_p"] = torch.tensor(p, dtype=torch.float64)
        return logs


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed

    torch.distributed.all_reduce(t)
    return t


class VAEStep(_GenerativeStep):
    """One Adam step on the beta-weighted negative ELBO (mean over the batch, nats per image).

    Logs the unweighted terms too, so runs with different beta or warm-up compare on one scale:
    ``neg_elbo`` = ``recon_nll`` + ``kl``."""

    def __init__(self, model: VAE, cfg: TrainConfig, device: torch.device, dist: DistContext | None = None) -> None:
        dist = self._setup(model, cfg, device, dist)
        self.net = prepare(model, cfg, device, dist)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizers = {"vae": make_adam(params, cfg.lr, cfg.betas, device)}
        # Posterior noise (and binarisation) from a private generator, independent of the global RNG.
        self.rng = torch.Generator().manual_seed(cfg.seed + 1)

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        model, mc = self.model, self.model.config
        x, labels = batch.images, batch.labels if model.conditional else None
        target = targets(x, mc.likelihood, binarize=mc.binarize, generator=self.rng)
        beta = kl_weight(step, mc.beta, mc.kl_warmup_steps)
        with autocast(self.cfg, self.device):
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
        return logs



from atelier.train.cyclegan_step import CycleGANStep  # noqa: E402 - it builds on the helpers above

FAMILY_STEPS = {"gan": GANStep, "vae": VAEStep, "cyclegan": CycleGANStep}
