"""The CycleGAN family: both generators, then both discriminators, per unpaired batch.

Follows the paper's code: the generators minimise the least-squares adversarial terms plus the cycle
and identity L1 terms (:mod:`atelier.objectives.cyclegan`) with the discriminators frozen; then each
discriminator takes one step on its real batch and on fakes drawn through a 50-image history
(:class:`~atelier.train.image_pool.ImagePool`). One Adam optimiser serves both generators and one
both discriminators. Everything random (the pools' draws) comes from the step's private generator,
and the pools' contents are checkpointed, so a resumed run repeats an uninterrupted one exactly.

Under torchrun each update is one forward of one DDP-wrapped module (both generators, or both
discriminators), so each gradient is all-reduced once; the generator update scores its fakes with
the bare, frozen discriminators, which need no reduction.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import annotated_types as at
import torch
from torch import nn

from atelier.config import Config, Positive
from atelier.data import DataError, ImageDataset, load_dataset, to_float
from atelier.models.cyclegan import CycleGAN
from atelier.models.ema import ema_decay_at, ema_update
from atelier.models.registry import Family, register_family
from atelier.objectives.cyclegan import discriminator_term, generator_terms
from atelier.train.config import TrainConfig
from atelier.train.distributed import DistContext
from atelier.train.image_pool import ImagePool
from atelier.train.steps.base import RunSetup, TrainStep, make_adam, prepare
from atelier.train.unpaired import UnpairedBatch, UnpairedSampler

PREVIEW_COLUMNS = 8


@dataclass
class UnpairedDataConfig(Config):
    """Two datasets (any :func:`atelier.data.load_dataset` spec: ``folder:PATH``, a folder path,
    ``mnist``, ``digits``) at one resolution; nothing pairs their images."""

    domain_a: str = ""  # folder of domain A images (or any dataset spec: folder:PATH, mnist, digits); with
    # train/ and test/ sub-folders, train/ is used
    domain_b: str = ""  # folder of domain B images
    resolution: Annotated[int, at.Interval(ge=8, le=4096)] = 28  # side of the square training images
    split: str = "train"  # a folder with train/ and test/ sub-folders trains on train/
    channels_a: Literal[1, 3] | None = None  # force grey or RGB for domain A (default: its natural count)
    channels_b: Literal[1, 3] | None = None  # force grey or RGB for domain B
    data_dir: str | None = None  # MNIST's IDX files, for a domain given as mnist
    strict: bool = False  # fail on any unreadable image
    verify: bool = True  # check the SHA-256 of dataset files



@dataclass
class CycleGANTrainConfig(TrainConfig):
    """CycleGAN training: the paper's Adam 2e-4, beta1 0.5 and linear decay over the second half; batches
    of 8 rather than 1 (instance norm makes the batch size harmless, and the CPU far more efficient)."""

    batch_size: int = 8
    lr_d: Positive | None = None  # the discriminators' learning rate (default: lr)
    lr_schedule: Literal["constant", "cosine", "linear"] = "linear"  # linear keeps the rate for the first
    # half, then decays it linearly to 0 (the paper); cosine decays to 0 by the last step; both need steps
    # or epochs


def load_domains(data: UnpairedDataConfig, *, progress: bool = True) -> tuple[ImageDataset, ImageDataset]:
    if not data.domain_a or not data.domain_b:
        raise DataError("a translation run needs two domains: give domain_a and domain_b (--domain-a/--domain-b)")
    out = []
    for spec, channels in ((data.domain_a, data.channels_a), (data.domain_b, data.channels_b)):
        spec = spec if ":" in spec or spec in ("mnist", "digits", "cifar10") else f"folder:{spec}"
        out.append(load_dataset(spec, resolution=data.resolution, split=data.split, data_dir=data.data_dir,
                                channels=channels, strict=data.strict, verify=data.verify, progress=progress))
    return out[0], out[1]


def _preview(dataset: ImageDataset, seed: int) -> torch.Tensor:
    """A fixed handful of a domain's images in [-1, 1] for the sample grids."""
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:PREVIEW_COLUMNS]
    return to_float(dataset.images[idx])


class _Generators(nn.Module):
    """Both generators' work for one update, as one forward (one DDP reduction under torchrun).

    Instance norm works per image, so stacking two inputs into one call changes no result."""

    def __init__(self, g_ab: nn.Module, g_ba: nn.Module, identity: bool) -> None:
        super().__init__()
        self.g_ab, self.g_ba, self.identity = g_ab, g_ba, identity

    def forward(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor | None]:
        n_a, n_b = real_a.shape[0], real_b.shape[0]
        if self.identity:
            fake_b, idt_b = self.g_ab(torch.cat([real_a, real_b])).split([n_a, n_b])
            fake_a, idt_a = self.g_ba(torch.cat([real_b, real_a])).split([n_b, n_a])
        else:
            fake_b, fake_a, idt_b, idt_a = self.g_ab(real_a), self.g_ba(real_b), None, None
        return {"fake_b": fake_b, "fake_a": fake_a, "idt_b": idt_b, "idt_a": idt_a,
                "rec_a": self.g_ba(fake_b), "rec_b": self.g_ab(fake_a)}


class _Discriminators(nn.Module):
    """Both discriminators on their real and pooled fake batches, as one forward."""

    def __init__(self, d_a: nn.Module, d_b: nn.Module) -> None:
        super().__init__()
        self.d_a, self.d_b = d_a, d_b

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.d_a(a), self.d_b(b)


class CycleGANStep(TrainStep):
    def __init__(self, model: CycleGAN, cfg: CycleGANTrainConfig, device: torch.device,
                 dist: DistContext | None = None, *, preview_images: tuple[torch.Tensor, torch.Tensor] | None = None,
                 pool_size: int = 50) -> None:
        """``preview_images``: fixed (A, B) images in [-1, 1] for the sample grids (default: the first
        batch seen)."""
        dist = self._setup(model, cfg, device, dist)
        self.generators = prepare(_Generators(model.g_ab, model.g_ba, model.config.identity_loss), cfg, device, dist)
        self.discriminators = prepare(_Discriminators(model.d_a, model.d_b), cfg, device, dist)
        single = DistContext()  # the frozen discriminators of the generator update: nothing to reduce
        self.D_a, self.D_b = (prepare(d, cfg, device, single) for d in (model.d_a, model.d_b))
        self.optimizers = {
            "generator": make_adam(itertools.chain(model.g_ab.parameters(), model.g_ba.parameters()), cfg.lr,
                                   cfg.betas, device),
            "discriminator": make_adam(itertools.chain(model.d_a.parameters(), model.d_b.parameters()),
                                       cfg.lr_d or cfg.lr, cfg.betas, device),
        }
        self.rng = torch.Generator().manual_seed(cfg.seed + 1 + 1000 * dist.rank)
        self.pool_a, self.pool_b = ImagePool(pool_size), ImagePool(pool_size)
        self.preview_images = preview_images

    @classmethod
    def setup_run(cls, data: UnpairedDataConfig, train: TrainConfig, model_kwargs: dict[str, Any], *,
                  conditional: bool, dist: DistContext, device: torch.device) -> RunSetup:
        if getattr(train, "eval_every", None):
            raise ValueError("FID evaluation during training (eval_every) is for generative models; measure a "
                             "translation run with atelier.metrics.translation instead")
        if conditional:
            raise ValueError("a CycleGAN translates between two domains; it takes no class labels")
        a, b = load_domains(data, progress=train.progress and dist.is_main)
        kwargs = dict(model_kwargs)
        kwargs.setdefault("resolution", data.resolution)
        kwargs.setdefault("channels_a", a.channels)
        kwargs.setdefault("channels_b", b.channels)
        expected = (kwargs["resolution"], kwargs["channels_a"], kwargs["channels_b"])
        if expected != (a.resolution, a.channels, b.channels):
            raise DataError(f"the model expects {expected[1]} and {expected[2]} channels at {expected[0]} px but the "
                            f"domains give {a.channels} and {b.channels} at {a.resolution} px; set the data "
                            "resolution/channels to match")
        sampler = UnpairedSampler(a, b, train.batch_size, train.seed, device=device, rank=dist.rank,
                                  world_size=dist.world_size, channels_last=train.channels_last)
        info = {"a": {"name": a.name, "size": len(a)}, "b": {"name": b.name, "size": len(b)}}
        previews = (_preview(a, train.seed), _preview(b, train.seed + 1))
        return RunSetup(sampler, kwargs, info, step_kwargs={"preview_images": previews}, dataset=a)

    def train_step(self, batch: UnpairedBatch, step: int) -> dict[str, torch.Tensor]:
        model, mc, cfg = self.model, self.model.config, self.cfg
        real_a, real_b = batch.images, batch.images_b
        n_a = real_a.shape[0]
        if self.preview_images is None:
            self.preview_images = (real_a[:PREVIEW_COLUMNS].detach().cpu(), real_b[:PREVIEW_COLUMNS].detach().cpu())
        opt_g, opt_d = self.optimizers["generator"], self.optimizers["discriminator"]

        # Generators: fool the (frozen) discriminators, reconstruct through the cycle, keep identities.
        model.d_a.requires_grad_(False)
        model.d_b.requires_grad_(False)
        with self.autocast():
            out = self.generators(real_a, real_b)
            fake_a, fake_b = out["fake_a"], out["fake_b"]
            terms = generator_terms(real_a=real_a, real_b=real_b, rec_a=out["rec_a"], rec_b=out["rec_b"],
                                    d_b_of_fake_b=self.D_b(fake_b), d_a_of_fake_a=self.D_a(fake_a),
                                    idt_b=out["idt_b"], idt_a=out["idt_a"], lambda_cycle=mc.lambda_cycle,
                                    lambda_identity=mc.lambda_identity)
        opt_g.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt_g.step()
        model.d_a.requires_grad_(True)
        model.d_b.requires_grad_(True)

        # Discriminators: real -> 1, fakes from the history -> 0; one pass over real and fake each.
        pooled_a = self.pool_a.query(fake_a, self.rng).to(real_a.dtype)
        pooled_b = self.pool_b.query(fake_b, self.rng).to(real_b.dtype)
        with self.autocast():
            out_a, out_b = self.discriminators(torch.cat([real_a, pooled_a]), torch.cat([real_b, pooled_b]))
            loss_d_a = discriminator_term(out_a[:n_a], out_a[n_a:])
            loss_d_b = discriminator_term(out_b[: real_b.shape[0]], out_b[real_b.shape[0] :])
        opt_d.zero_grad(set_to_none=True)
        (loss_d_a + loss_d_b).backward()
        opt_d.step()

        decay = ema_decay_at(step, cfg.ema_decay)
        ema_update(model.g_ab_ema, model.g_ab, decay)
        ema_update(model.g_ba_ema, model.g_ba, decay)
        logs = {"loss_g": terms.pop("loss").detach(), "loss_d": (loss_d_a + loss_d_b).detach(),
                "loss_d_a": loss_d_a.detach(), "loss_d_b": loss_d_b.detach()}
        logs.update({k: v.detach() for k, v in terms.items()})
        return logs

    # -- previews: rows A, A->B, A->B->A, B, B->A, B->A->B -------------------------------------
    def preview(self, n: int, seed: int) -> torch.Tensor:
        """Translations of the fixed preview images by the EMA generators (``seed`` is not needed:
        translation is deterministic). Grey rows are shown in RGB when the other domain is colour."""
        model = self.model
        if self.preview_images is None:
            c = max(model.config.channels_a, model.config.channels_b)
            return torch.zeros(n, c, model.config.resolution, model.config.resolution)
        k = max(1, n // 6)
        a, b = (x[:k] for x in self.preview_images)
        ab = model.translate(a, "a2b")
        aba = model.translate(ab, "b2a")
        ba = model.translate(b, "b2a")
        bab = model.translate(ba, "a2b")
        rows = [a, ab, aba, b, ba, bab]
        c = max(x.shape[1] for x in rows)
        return torch.cat([convert_channels_float(x, c) for x in rows])

    def preview_layout(self) -> int:
        return PREVIEW_COLUMNS if self.preview_images is None else min(PREVIEW_COLUMNS, len(self.preview_images[0]))

    def preview_count(self) -> int:
        return 6 * self.preview_layout()

    # -- checkpointed state --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"rng": self.rng.get_state(), "pool_a": self.pool_a.state_dict(), "pool_b": self.pool_b.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.set_state(state["rng"])
        self.pool_a.load_state_dict(state["pool_a"], self.device)
        self.pool_b.load_state_dict(state["pool_b"], self.device)


def convert_channels_float(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey -> RGB by repetition for float images (the grids need one channel count)."""
    return images if images.shape[1] == channels else images.expand(-1, channels, -1, -1)


FAMILY = register_family(Family(
    name="cyclegan", model_class=CycleGAN, step_class=CycleGANStep, train_config=CycleGANTrainConfig,
    data_config=UnpairedDataConfig, default_model="cyclegan",
    summary="train a CycleGAN on two unpaired image folders",
))
