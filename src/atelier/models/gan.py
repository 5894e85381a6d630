"""DCGAN generator and discriminator (Radford et al. 2016), optionally class-conditional.

Both networks are built for any resolution ``start * 2**k`` with start in {4, 7} (28, 32, 64, 128...):
the generator projects the latent to a ``start x start`` map and doubles it k times; the
discriminator mirrors it. Conditioning: the generator concatenates a learned class embedding to the
latent; the discriminator uses the projection head of Miyato & Koyama (2018).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Annotated, Literal

import annotated_types as at
import torch
from torch import nn

from atelier.config import Config, Width
from atelier.models.latents import normal_latents
from atelier.models.layers import dcgan_init, down_block, maybe_spectral, norm2d, start_size, up_block
from atelier.models.pretrained import PretrainedMixin
from atelier.models.registry import register_model



@dataclass
class GANConfig(Config):
    resolution: Annotated[int, at.Interval(ge=4, le=4096)] = 28
    channels: Literal[1, 3] = 1
    latent_dim: Width = 128
    g_width: Width = 64  # generator channels at the last hidden layer (DCGAN's ngf)
    d_width: Width = 64  # discriminator channels at the first layer (DCGAN's ndf)
    max_width_mult: Annotated[int, at.Interval(ge=1, le=1024)] = 8  # cap on the width multiplier at low resolutions
    num_classes: Annotated[int, at.Interval(ge=0, le=10**6)] = 0  # 0: unconditional
    class_embed_dim: Width = 64  # size of the generator's label embedding (conditional only)
    g_norm: Literal["batch", "none"] = "batch"  # batch | none
    d_norm: Literal["batch", "spectral", "none"] = "batch"  # batch | spectral | none
    loss: Literal["nonsaturating", "hinge"] = "nonsaturating"  # nonsaturating (the BCE of DCGAN) | hinge

    def __post_init__(self) -> None:
        super().__post_init__()
        start_size(self.resolution)  # validates the resolution

    def widths(self, base: int) -> list[int]:
        """Channels per stage from the smallest feature map to the largest: [8b, 4b, 2b, b] at 64 px."""
        _, n = start_size(self.resolution)
        return [base * min(2 ** (n - 1 - i), self.max_width_mult) for i in range(n)]


class Generator(nn.Module):
    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        start, _ = start_size(cfg.resolution)
        widths = cfg.widths(cfg.g_width)
        self.latent_dim = cfg.latent_dim
        self.embed = nn.Embedding(cfg.num_classes, cfg.class_embed_dim) if cfg.num_classes else None
        z_in = cfg.latent_dim + (cfg.class_embed_dim if cfg.num_classes else 0)
        # (B, z_in, 1, 1) -> (B, widths[0], start, start)
        self.project = nn.Sequential(
            nn.ConvTranspose2d(z_in, widths[0], start, 1, 0, bias=cfg.g_norm != "batch"),
            norm2d(cfg.g_norm, widths[0]),
            nn.ReLU(inplace=True),
        )
        # each block doubles the size: (B, w_i, s, s) -> (B, w_{i+1}, 2s, 2s)
        self.blocks = nn.Sequential(*[up_block(a, b, cfg.g_norm) for a, b in zip(widths[:-1], widths[1:])])
        # (B, widths[-1], R/2, R/2) -> (B, C, R, R) in [-1, 1]
        self.to_image = nn.Sequential(nn.ConvTranspose2d(widths[-1], cfg.channels, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``labels``: class indices (B,), or class weights (B, K) whose rows mix the embeddings."""
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels")
            emb = labels.to(self.embed.weight.dtype) @ self.embed.weight if labels.dim() == 2 else self.embed(labels)
            z = torch.cat([z, emb], dim=1)
        h = self.project(z[:, :, None, None])
        return self.to_image(self.blocks(h))


class Discriminator(nn.Module):
    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        start, _ = start_size(cfg.resolution)
        widths = cfg.widths(cfg.d_width)[::-1]  # [b, 2b, 4b, 8b] at 64 px
        sn = cfg.d_norm == "spectral"
        # (B, C, R, R) -> (B, widths[-1], start, start)
        stages = [down_block(cfg.channels, widths[0], cfg.d_norm, first=True)]
        stages += [down_block(a, b, cfg.d_norm) for a, b in zip(widths[:-1], widths[1:])]
        self.features = nn.Sequential(*stages)
        # (B, widths[-1], start, start) -> (B, 1, 1, 1): the unconditional logit
        self.head = maybe_spectral(nn.Conv2d(widths[-1], 1, start, 1, 0), sn)
        self.embed = maybe_spectral(nn.Embedding(cfg.num_classes, widths[-1]), sn) if cfg.num_classes else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(images)
        logits = self.head(h).flatten()  # (B,)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: pass labels")
            # projection: <embed(y), sum-pooled features>
            logits = logits + (self.embed(labels) * h.sum(dim=(2, 3))).sum(dim=1)
        return logits

    @property
    def uses_batch_norm(self) -> bool:
        return any(isinstance(m, nn.BatchNorm2d) for m in self.modules())


class GAN(PretrainedMixin, nn.Module):
    """A generator, a discriminator and the exponential moving average (EMA) of the generator.

    Sampling uses the EMA generator by default: it gives visibly smoother, better samples than the
    raw weights at no training cost (Karras et al. 2018; Yazici et al. 2019).
    """

    family = "gan"
    tasks = ("sample", "interpolate")
    config_class = GANConfig

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        dcgan_init(self)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()

    @property
    def conditional(self) -> bool:
        return self.config.num_classes > 0

    def sample_latents(
        self, n: int, *, generator: torch.Generator | None = None, truncation: float | None = None
    ) -> torch.Tensor:
        """Standard normal latents (n, latent_dim) on CPU, optionally truncated (see ``normal_latents``)."""
        return normal_latents(n, self.config.latent_dim, generator=generator, truncation=truncation)

    def default_labels(self, n: int) -> torch.Tensor | None:
        """0, 1, ..., K-1, 0, 1, ... for conditional models; None otherwise."""
        return torch.arange(n) % self.config.num_classes if self.conditional else None

    @torch.no_grad()
    def generate(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, *, use_ema: bool = True, batch_size: int = 256
    ) -> torch.Tensor:
        """Decode given latents (N, latent_dim) to images (N, C, R, R) in [-1, 1], in eval mode."""
        net = self.generator_ema if use_ema else self.generator
        was_training = net.training
        net.eval()
        device = next(net.parameters()).device
        if self.conditional and labels is None:
            raise ValueError("this GAN is class-conditional: pass labels")
        out = []
        for i in range(0, z.shape[0], batch_size):
            lab = labels[i : i + batch_size].to(device) if labels is not None and self.conditional else None
            out.append(net(z[i : i + batch_size].to(device), lab).float().cpu())
        net.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.config.channels, *(2 * [self.config.resolution]))

    def sample(
        self,
        n: int,
        *,
        labels: torch.Tensor | int | None = None,
        generator: torch.Generator | None = None,
        truncation: float | None = None,
        use_ema: bool = True,
    ) -> torch.Tensor:
        """``n`` new images (n, C, R, R) in [-1, 1]. ``labels``: a class index, a tensor of n indices,
        or None (cycles through the classes for a conditional model). Pass ``generator`` to make it
        reproducible."""
        z = self.sample_latents(n, generator=generator, truncation=truncation)
        if isinstance(labels, int):
            labels = torch.full((n,), labels, dtype=torch.long)
        if self.conditional:
            labels = self.default_labels(n) if labels is None else labels.long()
            if labels.min() < 0 or labels.max() >= self.config.num_classes:
                raise ValueError(f"labels must lie in 0..{self.config.num_classes - 1}, got "
                                 f"{int(labels.min())}..{int(labels.max())}")
        elif labels is not None:
            raise ValueError("this GAN is not class-conditional: it takes no labels")
        return self.generate(z, labels, use_ema=use_ema)


@register_model("dcgan")
def dcgan(**kwargs) -> GAN:
    """A configurable DCGAN; keyword arguments are the fields of :class:`GANConfig`."""
    return GAN(GANConfig(**kwargs))


@register_model("dcgan64")
def dcgan64(**kwargs) -> GAN:
    """The classic 64x64 DCGAN of Radford et al. and the PyTorch examples: latent 100, 64 base channels,
    batch norm in both networks, BCE (non-saturating) loss. Keyword arguments override fields."""
    settings = dict(resolution=64, channels=1, latent_dim=100, g_width=64, d_width=64, g_norm="batch",
                    d_norm="batch", loss="nonsaturating")
    settings.update(kwargs)
    return GAN(GANConfig(**settings))
