"""The CycleGAN training step: both generators, then both discriminators, per unpaired batch.

Follows the paper's code: the generators minimise the least-squares adversarial terms plus the cycle
and identity L1 terms (:mod:`atelier.objectives.cyclegan`) with the discriminators frozen; then each
discriminator takes one step on its real batch and on fakes drawn through a 50-image history
(:class:`~atelier.train.image_pool.ImagePool`). One Adam optimiser serves both generators and one
both discriminators. Everything random (the pools' draws) comes from the step's private generator,
and the pools' contents are checkpointed, so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import itertools

import torch

from atelier.models.cyclegan import CycleGAN
from atelier.objectives.cyclegan import discriminator_term, generator_terms
from atelier.train.config import TrainConfig
from atelier.train.distributed import DistContext
from atelier.train.ema import ema_decay_at, ema_update
from atelier.train.image_pool import ImagePool
from atelier.train.steps import _GenerativeStep, autocast, make_adam, prepare
from atelier.train.unpaired import UnpairedBatch

PREVIEW_COLUMNS = 8


class CycleGANStep(_GenerativeStep):
    def __init__(self, model: CycleGAN, cfg: TrainConfig, device: torch.device, dist: DistContext | None = None,
                 *, preview_images: tuple[torch.Tensor, torch.Tensor] | None = None, pool_size: int = 50) -> None:
        """``preview_images``: fixed (A, B) images in [-1, 1] for the sample grids (default: the first
        batch seen)."""
        dist = self._setup(model, cfg, device, dist)
        if dist.enabled:
            raise ValueError("CycleGAN training runs in a single process; start it without torchrun")
        single = DistContext()
        self.G_ab, self.G_ba = (prepare(g, cfg, device, single) for g in (model.g_ab, model.g_ba))
        self.D_a, self.D_b = (prepare(d, cfg, device, single) for d in (model.d_a, model.d_b))
        self.optimizers = {
            "generator": make_adam(itertools.chain(model.g_ab.parameters(), model.g_ba.parameters()), cfg.lr,
                                   cfg.betas, device),
            "discriminator": make_adam(itertools.chain(model.d_a.parameters(), model.d_b.parameters()),
                                       cfg.lr_d or cfg.lr, cfg.betas, device),
        }
        self.rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.pool_a, self.pool_b = ImagePool(pool_size), ImagePool(pool_size)
        self.preview_images = preview_images

    def train_step(self, batch: UnpairedBatch, step: int) -> dict[str, torch.Tensor]:
        model, mc, cfg = self.model, self.model.config, self.cfg
        real_a, real_b = batch.images, batch.images_b
        n_a = real_a.shape[0]
        if self.preview_images is None:
            self.preview_images = (real_a[:PREVIEW_COLUMNS].detach().cpu(), real_b[:PREVIEW_COLUMNS].detach().cpu())
        opt_g, opt_d = self.optimizers["generator"], self.optimizers["discriminator"]

        # Generators: fool the (frozen) discriminators, reconstruct through the cycle, keep identities.
        # Instance norm works per image, so stacking two inputs into one call changes no result.
        model.d_a.requires_grad_(False)
        model.d_b.requires_grad_(False)
        with autocast(cfg, self.device):
            if mc.identity_loss:
                fake_b, idt_b = self.G_ab(torch.cat([real_a, real_b])).split([n_a, real_b.shape[0]])
                fake_a, idt_a = self.G_ba(torch.cat([real_b, real_a])).split([real_b.shape[0], n_a])
            else:
                fake_b, fake_a, idt_b, idt_a = self.G_ab(real_a), self.G_ba(real_b), None, None
            rec_a, rec_b = self.G_ba(fake_b), self.G_ab(fake_a)
            terms = generator_terms(real_a=real_a, real_b=real_b, rec_a=rec_a, rec_b=rec_b,
                                    d_b_of_fake_b=self.D_b(fake_b), d_a_of_fake_a=self.D_a(fake_a),
                                    idt_b=idt_b, idt_a=idt_a, lambda_cycle=mc.lambda_cycle,
                                    lambda_identity=mc.lambda_identity)
        opt_g.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt_g.step()
        model.d_a.requires_grad_(True)
        model.d_b.requires_grad_(True)

        # Discriminators: real -> 1, fakes from the history -> 0; one pass over real and fake each.
        pooled_a = self.pool_a.query(fake_a, self.rng).to(real_a.dtype)
        pooled_b = self.pool_b.query(fake_b, self.rng).to(real_b.dtype)
        with autocast(cfg, self.device):
            out_a = self.D_a(torch.cat([real_a, pooled_a]))
            out_b = self.D_b(torch.cat([real_b, pooled_b]))
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
