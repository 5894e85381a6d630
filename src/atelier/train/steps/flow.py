"""The flow family: one Adam step on the flow-matching loss (or DDPM's noise loss for the ddpm peer),
labels dropped with a probability so one network learns the conditional and unconditional velocity
(classifier-free guidance), gradient clipping, and the EMA weights that sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import annotated_types as at
import torch

from atelier.config import NonNegative, Probability
from atelier.models.ema import ema_decay_at, ema_update
from atelier.models.flow import FlowModel
from atelier.models.registry import Family, register_family
from atelier.objectives.flow import flow_matching_loss, noise_prediction_loss
from atelier.schedulers import flow_interpolant, sample_times
from atelier.train.batches import Batch
from atelier.train.config import DataConfig, GenerativeTrainConfig
from atelier.train.distributed import DistContext
from atelier.train.steps.base import GenerativeStep, make_adam, prepare


@dataclass
class FlowTrainConfig(GenerativeTrainConfig):
    """Flow matching: Adam (beta1 0.9) on batches of 128, logit-normal times (Esser et al. 2024),
    10% of labels dropped for classifier-free guidance, gradients clipped at norm 1, EMA 0.999."""

    batch_size: int = 128
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's beta1 and beta2
    warmup_steps: int = 100  # linear learning-rate warm-up from 0 over these steps
    time_sampling: Literal["uniform", "logit_normal"] = "logit_normal"  # training times: uniform in (0, 1) or
    # the sigmoid of a normal (more weight on the middle, where the velocity is hardest to predict)
    time_mean: Annotated[float, at.Interval(ge=-10.0, le=10.0)] = 0.0  # logit_normal: the normal's mean
    time_std: Annotated[float, at.Interval(gt=0.0, le=10.0)] = 1.0  # logit_normal: the normal's std
    label_dropout: Probability = 0.1  # conditional models: share of labels replaced by "no label" (the
    # unconditional model classifier-free guidance needs; 0 disables guidance)
    grad_clip: NonNegative = 1.0  # clip the gradient's norm to this (0: no clipping)
    weight_decay: Annotated[float, at.Interval(ge=0.0, le=1.0)] = 0.0  # decoupled (AdamW) weight decay


class FlowStep(GenerativeStep):
    """One optimiser step on the per-sample squared error, averaged over the batch; logs the loss and
    the gradient's norm before clipping."""

    def __init__(self, model: FlowModel, cfg: FlowTrainConfig, device: torch.device,
                 dist: DistContext | None = None) -> None:
        dist = self._setup(model, cfg, device, dist)
        self.net = prepare(model.net, cfg, device, dist)
        params = list(model.net.parameters())
        if cfg.weight_decay:
            self.optimizers = {"flow": torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas,
                                                         weight_decay=cfg.weight_decay, foreach=True)}
        else:
            self.optimizers = {"flow": make_adam(params, cfg.lr, cfg.betas, device)}
        # times, noise and label drops from a private generator, independent of the global RNG
        self.rng = torch.Generator().manual_seed(cfg.seed + 1)

    def train_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        model, cfg = self.model, self.cfg
        x0 = batch.images
        n = x0.shape[0]
        noise = torch.randn(x0.shape, generator=self.rng).to(self.device)
        if x0.is_contiguous(memory_format=torch.channels_last):
            noise = noise.contiguous(memory_format=torch.channels_last)
        labels = None
        if model.conditional:
            labels = batch.labels.clone()
            drop = torch.rand(n, generator=self.rng).to(labels.device) < cfg.label_dropout
            labels[drop] = model.config.num_classes  # "no label"
        if model.schedule is not None:  # the ddpm peer
            k = model.schedule.sample_steps(n, generator=self.rng).to(self.device)
            t = model.schedule.time_of(k).float()
            x_t = model.schedule.noise(x0, noise, k)
        else:
            t = sample_times(n, cfg.time_sampling, generator=self.rng, mean=cfg.time_mean, std=cfg.time_std,
                             device=self.device)
            x_t = flow_interpolant(x0, noise, t)
        with self.autocast():
            pred = self.net(x_t, t, labels)
        per_sample = noise_prediction_loss(pred, noise) if model.schedule is not None else \
            flow_matching_loss(pred, x0, noise)
        loss = per_sample.mean()
        opt = self.optimizers["flow"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.net.parameters(), cfg.grad_clip if cfg.grad_clip else float("inf"))
        opt.step()
        ema_update(model.net_ema, model.net, ema_decay_at(step, cfg.ema_decay))
        return {"loss": loss.detach(), "grad_norm": grad_norm.detach()}


FAMILY = register_family(Family(
    name="flow", model_class=FlowModel, step_class=FlowStep, train_config=FlowTrainConfig, data_config=DataConfig,
    default_model="flow", summary="train a flow-matching model (rectified flow U-Net; the ddpm peer with "
                                  "--model ddpm; class-conditional with --conditional, guided at sampling)",
    conditional=True,
))
