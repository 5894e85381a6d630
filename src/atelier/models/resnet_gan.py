"""Residual GANs for 32-64 px colour images: the SNGAN / BigGAN architecture (Miyato et al. 2018;
Brock et al. 2019), optionally class-conditional.

- Generator: z -> linear -> (w, s, s) with s in {4, 7} (see ``start_size``), then one residual
  up-block per doubling (BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3, plus a 1x1 conv of the upsampled
  input), then BN-ReLU-conv3x3-tanh. Class-conditional through conditional batch norm in every block.
- Discriminator: residual down-blocks (ReLU-conv3x3-ReLU-conv3x3-avgpool, 1x1 conv shortcut; the
  first one is SNGAN's "optimised" block without the leading ReLU) down to 2s x 2s, further blocks at
  that size, ReLU, global sum pooling and a linear head; spectral norm on every layer; labels enter
  through the projection head of Miyato & Koyama (2018).

The networks compute exactly the textbook functions, more cheaply: an upsample followed by a 3x3 conv
runs as one transposed conv, a 3x3 conv followed by average pooling as one strided conv, and each 1x1
shortcut runs at the smaller of its two sizes (a 1x1 conv commutes with nearest upsampling and with
average pooling). The weights are stored as the plain 3x3 and 1x1 convs.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Annotated, Literal

import annotated_types as at
import torch
import torch.nn.functional as F
from torch import nn

from atelier.config import Config, Width
from atelier.models.gan import GAN
from atelier.models.layers import (
    ConditionalBatchNorm2d,
    conv3x3_avgpool,
    embed_labels,
    maybe_spectral,
    start_size,
    upsample_conv3x3,
)
from atelier.models.registry import register_model


@dataclass
class ResNetGANConfig(Config):
    resolution: Annotated[int, at.Interval(ge=4, le=4096)] = 32
    channels: Literal[1, 3] = 3
    latent_dim: Width = 128
    g_width: Width = 64  # generator channels (of its last block; SNGAN's CIFAR-10 generator, sngan32: 256)
    d_width: Width = 64  # discriminator channels (of its first block; SNGAN's CIFAR-10 discriminator: 128)
    max_width_mult: Annotated[int, at.Interval(ge=1, le=1024)] = 1  # 1 keeps every block at g_width/d_width
    # (SNGAN on CIFAR-10); above 1, widths double per halving of the map up to this multiple (SNGAN at 64 px: 16)
    d_extra_blocks: Annotated[int, at.Interval(ge=0, le=16)] = 2  # discriminator blocks after the last
    # downsampling, at its final size (SNGAN on CIFAR-10: 2)
    num_classes: Annotated[int, at.Interval(ge=0, le=10**6)] = 0  # 0: unconditional
    loss: Literal["hinge", "nonsaturating"] = "hinge"  # hinge (SNGAN, BigGAN) | nonsaturating (BCE)

    def __post_init__(self) -> None:
        super().__post_init__()
        _, n = start_size(self.resolution)  # validates the resolution
        if n < 2:
            raise ValueError(f"resolution {self.resolution} is too small for a residual GAN: use 16 or more "
                             "(4*2^k or 7*2^k, e.g. 28, 32, 64)")

    def g_widths(self) -> list[int]:
        """Channels of the generator's maps, from the projected start map to the last block's output
        (n_doublings + 1 entries): [g]*4 at 32 px with max_width_mult 1; [16g, 8g, 4g, 2g, g] at 64 px with 16."""
        _, n = start_size(self.resolution)
        return [self.g_width * min(2 ** (n - j), self.max_width_mult) for j in range(n + 1)]

    def d_widths(self) -> list[int]:
        """Channels after each downsampling block of the discriminator (n_doublings - 1 entries; its
        extra blocks keep the last): [d]*2 at 32 px with max_width_mult 1."""
        _, n = start_size(self.resolution)
        return [self.d_width * min(2**j, self.max_width_mult) for j in range(n - 1)]


def _init(layer: nn.Module, gain: float) -> nn.Module:
    """SNGAN's initialisation: Xavier-uniform weights (gain sqrt(2) in front of a ReLU path), zero biases."""
    nn.init.xavier_uniform_(layer.weight, gain)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


Affine = tuple[torch.Tensor, torch.Tensor]  # per-sample gains and biases (B, C) of a conditional batch norm


class ClassAffine(nn.Module):
    """The class-conditional gains and biases of every conditional batch norm of the generator (SNGAN's
    per-layer class embeddings), kept in one table so one lookup serves them all: (K, 2 * sum(widths)),
    the gains initialised at 1 and the biases at 0 (each batch norm starts as a plain one).

    labels (B,) indices or (B, K) class weights -> [(gain (B, C_i), bias (B, C_i)) for each width C_i]."""

    def __init__(self, num_classes: int, widths: list[int]) -> None:
        super().__init__()
        self.sizes = [c for c in widths for _ in (0, 1)]  # gain_1, bias_1, gain_2, bias_2, ...
        self.embed = nn.Embedding(num_classes, sum(self.sizes))
        with torch.no_grad():
            for i, part in enumerate(self.embed.weight.split(self.sizes, dim=1)):
                part.fill_(1.0 if i % 2 == 0 else 0.0)

    def forward(self, labels: torch.Tensor) -> list[Affine]:
        parts = embed_labels(self.embed.weight, labels).split(self.sizes, dim=1)
        return list(zip(parts[0::2], parts[1::2]))


class UpBlock(nn.Module):
    """(B, c_in, H, W) -> (B, c_out, 2H, 2W): BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3 plus
    conv1x1(upsample(x)); with ``conditional`` the batch norms take per-sample gains and biases."""

    def __init__(self, c_in: int, c_out: int, conditional: bool = False) -> None:
        super().__init__()
        self.norm1 = ConditionalBatchNorm2d(c_in, conditional)
        self.conv1 = _init(nn.Conv2d(c_in, c_out, 3, 1, 1), math.sqrt(2))
        self.norm2 = ConditionalBatchNorm2d(c_out, conditional)
        self.conv2 = _init(nn.Conv2d(c_out, c_out, 3, 1, 1), math.sqrt(2))
        self.shortcut = _init(nn.Conv2d(c_in, c_out, 1), 1.0)

    def forward(self, x: torch.Tensor, affine1: Affine | None = None, affine2: Affine | None = None) -> torch.Tensor:
        h = F.relu(self.norm1(x, affine1), inplace=True)
        h = upsample_conv3x3(h, self.conv1.weight, self.conv1.bias)  # = conv1(upsample(h))
        h = self.conv2(F.relu(self.norm2(h, affine2), inplace=True))
        # = shortcut(upsample(x)), with the 1x1 conv at the input's size (a quarter of the work)
        return h + F.interpolate(self.shortcut(x), scale_factor=2.0, mode="nearest")


class DownBlock(nn.Module):
    """(B, c_in, H, W) -> (B, c_out, H/2, W/2) (same size with ``down=False``): ReLU-conv3x3-ReLU-conv3x3
    [-avgpool], plus a 1x1 conv of the [pooled] input where the shape changes (else the input itself).
    ``first``: SNGAN's optimised first block, with no ReLU on the image. Spectral norm on every conv."""

    def __init__(self, c_in: int, c_out: int, *, down: bool, first: bool = False) -> None:
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = maybe_spectral(_init(nn.Conv2d(c_in, c_out, 3, 1, 1), math.sqrt(2)), True)
        self.conv2 = maybe_spectral(_init(nn.Conv2d(c_out, c_out, 3, 1, 1), math.sqrt(2)), True)
        learnable = c_in != c_out or down
        self.shortcut = maybe_spectral(_init(nn.Conv2d(c_in, c_out, 1), 1.0), True) if learnable else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x if self.first else F.relu(x))
        h = F.relu(h, inplace=True)
        # = avg_pool2d(conv2(h), 2) when down
        h = conv3x3_avgpool(h, self.conv2.weight, self.conv2.bias) if self.down else self.conv2(h)
        s = F.avg_pool2d(x, 2) if self.down else x  # pooling first: the same function at a quarter of the work
        return h + (self.shortcut(s) if self.shortcut is not None else s)


class ResNetGenerator(nn.Module):
    """z (B, latent_dim) [and labels (B,) or class weights (B, K)] -> images (B, C, R, R) in [-1, 1]."""

    def __init__(self, cfg: ResNetGANConfig) -> None:
        super().__init__()
        self.start, _ = start_size(cfg.resolution)
        widths = cfg.g_widths()
        self.latent_dim = cfg.latent_dim
        # (B, latent_dim) -> (B, widths[0], start, start)
        self.project = _init(nn.Linear(cfg.latent_dim, widths[0] * self.start**2), 1.0)
        # each block doubles the size: (B, w_i, s, s) -> (B, w_{i+1}, 2s, 2s)
        conditional = cfg.num_classes > 0
        self.blocks = nn.ModuleList(UpBlock(a, b, conditional) for a, b in zip(widths[:-1], widths[1:]))
        # the gains and biases of the blocks' batch norms (norm1 at w_i, norm2 at w_{i+1}) for each class
        norm_widths = [c for a, b in zip(widths[:-1], widths[1:]) for c in (a, b)]
        self.class_affine = ClassAffine(cfg.num_classes, norm_widths) if conditional else None
        # (B, widths[-1], R, R) -> (B, C, R, R)
        self.norm = nn.BatchNorm2d(widths[-1])
        self.to_image = _init(nn.Conv2d(widths[-1], cfg.channels, 3, 1, 1), 1.0)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``labels``: class indices (B,), or class weights (B, K) whose rows mix the class embeddings."""
        affines: list[Affine | None] = [None] * (2 * len(self.blocks))
        if self.class_affine is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels")
            affines = self.class_affine(labels)
        h = self.project(z).unflatten(1, (-1, self.start, self.start))
        if self.to_image.weight.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)  # the model was put in channels-last format
        for i, block in enumerate(self.blocks):
            h = block(h, affines[2 * i], affines[2 * i + 1])
        return torch.tanh(self.to_image(F.relu(self.norm(h), inplace=True)))


class ResNetDiscriminator(nn.Module):
    """images (B, C, R, R) [and labels (B,) or class weights (B, K)] -> logits (B,)."""

    def __init__(self, cfg: ResNetGANConfig) -> None:
        super().__init__()
        widths = cfg.d_widths()
        blocks = [DownBlock(cfg.channels, widths[0], down=True, first=True)]
        blocks += [DownBlock(a, b, down=True) for a, b in zip(widths[:-1], widths[1:])]
        blocks += [DownBlock(widths[-1], widths[-1], down=False) for _ in range(cfg.d_extra_blocks)]
        # (B, C, R, R) -> (B, widths[-1], 2 start, 2 start)
        self.blocks = nn.Sequential(*blocks)
        self.head = maybe_spectral(_init(nn.Linear(widths[-1], 1), 1.0), True)
        self.embed = (maybe_spectral(_init(nn.Embedding(cfg.num_classes, widths[-1]), 1.0), True)
                      if cfg.num_classes else None)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None and labels is None:
            raise ValueError("this discriminator is class-conditional: pass labels")
        h = F.relu(self.blocks(images))
        # the head in fp32 even under bf16 autocast: a sum over the map holds large values, and it is cheap
        with torch.autocast(h.device.type, enabled=False):
            h = (h.float() if h.dtype in (torch.bfloat16, torch.float16) else h).sum(dim=(2, 3))  # sum pooling (B, C)
            logits = self.head(h).flatten()  # (B,)
            if self.embed is not None:  # projection: <embed(y), features>
                logits = logits + (embed_labels(self.embed.weight, labels) * h).sum(dim=1)
        return logits

    @property
    def uses_batch_norm(self) -> bool:
        return False  # real and fake may share one pass


class ResNetGAN(GAN):
    """A residual generator, its spectrally normalised discriminator and the generator's EMA copy.

    The sampling API is the DCGAN family's (:class:`~atelier.models.gan.GAN`): ``sample``,
    ``generate`` (labels as indices or class weights), ``sample_latents``, ``default_labels``."""

    family = "resnet-gan"
    tasks = ("sample", "interpolate")
    config_class = ResNetGANConfig

    def __init__(self, config: ResNetGANConfig) -> None:
        nn.Module.__init__(self)  # GAN.__init__ builds DCGAN networks: only its methods are shared
        self.config = config
        self.generator = ResNetGenerator(config)
        self.discriminator = ResNetDiscriminator(config)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()


@register_model("resnet-gan")
def resnet_gan(**kwargs) -> ResNetGAN:
    """A configurable residual GAN (SNGAN/BigGAN style), sized for training on a CPU in minutes to hours
    (64 channels in both networks, where SNGAN's CIFAR-10 networks, ``sngan32``, have 256 and 128);
    keyword arguments are the fields of :class:`ResNetGANConfig`."""
    return ResNetGAN(ResNetGANConfig(**kwargs))


@register_model("sngan32")
def sngan32(**kwargs) -> ResNetGAN:
    """SNGAN's CIFAR-10 networks (Miyato et al. 2018): 32 px RGB, latent 128, generator 256 channels,
    discriminator 128, hinge loss. Keyword arguments override fields."""
    settings = dict(resolution=32, channels=3, latent_dim=128, g_width=256, d_width=128, max_width_mult=1,
                    d_extra_blocks=2, loss="hinge")
    settings.update(kwargs)
    return ResNetGAN(ResNetGANConfig(**settings))
