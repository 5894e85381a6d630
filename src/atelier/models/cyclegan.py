"""CycleGAN: unpaired image-to-image translation (Zhu et al. 2017).

Two generators map between domains A and B (``g_ab``: A -> B, ``g_ba``: B -> A) and two
discriminators tell real from translated images in each domain (``d_a``, ``d_b``). The networks
follow the paper's code at any resolution that the generator's downsampling divides:

- generator (Johnson et al. 2016): reflection-padded 7x7 conv, ``n_downsampling`` stride-2 3x3
  convs, ``n_blocks`` residual blocks, as many stride-2 transposed convs, a 7x7 conv and tanh;
  instance norm throughout::

      (B, C_in, R, R) -> (B, w, R, R) -> (B, w 2^n, R/2^n, R/2^n) -> ... -> (B, C_out, R, R) in [-1, 1]

- discriminator: a PatchGAN (Isola et al. 2017) of ``d_layers`` stride-2 4x4 convs, one stride-1
  4x4 conv and a 4x4 conv to one logit per patch; LeakyReLU 0.2, instance norm after the first
  layer. Its receptive field is 16, 34, 70 or 142 pixels for 1, 2, 3 or 4 layers, so small images
  use fewer layers (the paper's 70x70 PatchGAN is ``d_layers=3``).

Domains may differ in channels (grey <-> RGB); the identity loss then does not apply. Images are in
[-1, 1] as everywhere in atelier. Exponential moving averages of both generators (``g_ab_ema``,
``g_ba_ema``) are kept by the training step and used by :meth:`CycleGAN.translate` by default.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Annotated, Literal

import annotated_types as at
import torch
from torch import nn

from atelier.config import Config, NonNegative, Width
from atelier.models.layers import ResidualBlock, conv_norm_relu, dcgan_init, norm2d
from atelier.models.pretrained import PretrainedMixin
from atelier.models.registry import register_model

DIRECTIONS = ("a2b", "b2a")


def patch_receptive_field(d_layers: int) -> int:
    """Receptive field in pixels of one PatchGAN logit: 16, 34, 70, 142 for 1..4 stride-2 layers."""
    r = 7  # the two stride-1 4x4 convs at the end
    for _ in range(d_layers):
        r = 2 * r + 2
    return r


@dataclass
class CycleGANConfig(Config):
    resolution: Annotated[int, at.Interval(ge=8, le=4096)] = 28
    channels_a: Literal[1, 3] = 1
    channels_b: Literal[1, 3] = 1
    g_width: Width = 32  # generator channels at full resolution (the paper's ngf: 64)
    d_width: Width = 32  # discriminator channels of the first layer (the paper's ndf: 64)
    n_downsampling: Annotated[int, at.Interval(ge=0, le=10)] | None = None  # None: 2 when the resolution allows it (28, 32, ...), else 1 or 0
    n_blocks: Annotated[int, at.Interval(ge=0, le=256)] | None = None  # residual blocks; None: 9 at >= 256 px, 6 at >= 128 px, else 4
    d_layers: Annotated[int, at.Interval(ge=0, le=10)] | None = None  # PatchGAN stride-2 layers; None: 1 below 64 px, 2 below 128 px, else 3
    lambda_cycle: NonNegative = 10.0  # weight of the cycle-consistency L1 loss (the paper's lambda)
    lambda_identity: NonNegative = 0.5  # identity L1 weight as a fraction of lambda_cycle (0: off)

    def __post_init__(self) -> None:
        super().__post_init__()
        # Resolve the automatic choices, so the saved config names the architecture that was built.
        if self.n_downsampling is None:
            self.n_downsampling = next(n for n in (2, 1, 0)
                                       if self.resolution % 2**n == 0 and self.resolution // 2**n >= 7)
        if self.n_blocks is None:
            self.n_blocks = 9 if self.resolution >= 256 else 6 if self.resolution >= 128 else 4
        if self.d_layers is None:
            self.d_layers = 1 if self.resolution < 64 else 2 if self.resolution < 128 else 3
        if self.n_downsampling < 0 or self.resolution % 2**self.n_downsampling:
            raise ValueError(f"resolution {self.resolution} is not divisible by 2**n_downsampling "
                             f"(n_downsampling={self.n_downsampling}); use fewer downsamplings")
        if self.n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {self.n_blocks}")
        if self.d_layers < 1 or self.resolution // 2**self.d_layers < 3:
            raise ValueError(f"d_layers={self.d_layers} leaves no patches at {self.resolution} px; use fewer layers")
        if self.lambda_cycle < 0 or self.lambda_identity < 0:
            raise ValueError("lambda_cycle and lambda_identity must be >= 0")

    @property
    def identity_loss(self) -> bool:
        """The identity term needs both domains to have the same channels."""
        return self.lambda_identity > 0 and self.channels_a == self.channels_b


class ResnetGenerator(nn.Module):
    """(B, c_in, R, R) in [-1, 1] -> (B, c_out, R, R) in [-1, 1]; fully convolutional."""

    def __init__(self, c_in: int, c_out: int, width: int, n_downsampling: int, n_blocks: int) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(n_downsampling + 1)]  # [w, 2w, 4w] for two downsamplings
        layers: list[nn.Module] = [conv_norm_relu(c_in, width, 7, "instance")]  # (B, w, R, R)
        # each halves the size: (B, w_i, s, s) -> (B, w_{i+1}, s/2, s/2)
        layers += [conv_norm_relu(a, b, 3, "instance", stride=2) for a, b in zip(widths[:-1], widths[1:])]
        layers += [ResidualBlock(widths[-1], 3, "instance") for _ in range(n_blocks)]
        for a, b in zip(widths[:0:-1], widths[-2::-1]):  # each doubles the size back
            layers += [nn.ConvTranspose2d(a, b, 3, 2, 1, output_padding=1, bias=False), norm2d("instance", b),
                       nn.ReLU(inplace=True)]
        # (B, w, R, R) -> (B, c_out, R, R)
        layers += [nn.Conv2d(width, c_out, 7, 1, 3, padding_mode="reflect"), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """(B, C, R, R) -> (B, 1, P, P) logits, one per overlapping patch (P = R / 2^d_layers - 2)."""

    def __init__(self, channels: int, width: int, d_layers: int, max_width_mult: int = 8) -> None:
        super().__init__()
        w = [width * min(2**i, max_width_mult) for i in range(d_layers + 1)]
        # (B, C, R, R) -> (B, w0, R/2, R/2): no norm on the first layer
        layers: list[nn.Module] = [nn.Conv2d(channels, w[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for a, b in zip(w[: d_layers - 1], w[1:d_layers]):  # (B, a, s, s) -> (B, b, s/2, s/2)
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), norm2d("instance", b), nn.LeakyReLU(0.2, inplace=True)]
        # (B, w, s, s) -> (B, w', s-1, s-1) -> (B, 1, s-2, s-2)
        layers += [nn.Conv2d(w[d_layers - 1], w[d_layers], 4, 1, 1, bias=False), norm2d("instance", w[d_layers]),
                   nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(w[d_layers], 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CycleGAN(PretrainedMixin, nn.Module):
    family = "cyclegan"
    tasks = ("translate",)
    config_class = CycleGANConfig

    def __init__(self, config: CycleGANConfig) -> None:
        super().__init__()
        self.config = c = config
        self.g_ab = ResnetGenerator(c.channels_a, c.channels_b, c.g_width, c.n_downsampling, c.n_blocks)
        self.g_ba = ResnetGenerator(c.channels_b, c.channels_a, c.g_width, c.n_downsampling, c.n_blocks)
        self.d_a = PatchDiscriminator(c.channels_a, c.d_width, c.d_layers)
        self.d_b = PatchDiscriminator(c.channels_b, c.d_width, c.d_layers)
        dcgan_init(self)  # conv weights ~ N(0, 0.02), biases 0: the paper's "normal" initialisation
        self.g_ab_ema = copy.deepcopy(self.g_ab).requires_grad_(False).eval()
        self.g_ba_ema = copy.deepcopy(self.g_ba).requires_grad_(False).eval()

    def generator(self, direction: str, *, use_ema: bool = True) -> nn.Module:
        """The network translating in ``direction`` ("a2b" or "b2a")."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if direction == "a2b":
            return self.g_ab_ema if use_ema else self.g_ab
        return self.g_ba_ema if use_ema else self.g_ba

    @property
    def min_size(self) -> int:
        """The smallest side the generators take: the reflection paddings need 4 pixels at every scale."""
        return 4 * 2**self.config.n_downsampling

    def input_channels(self, direction: str) -> int:
        return self.config.channels_a if direction == "a2b" else self.config.channels_b

    def output_channels(self, direction: str) -> int:
        return self.config.channels_b if direction == "a2b" else self.config.channels_a

    @torch.no_grad()
    def translate(self, x: torch.Tensor, direction: str = "a2b", *, use_ema: bool = True,
                  batch_size: int = 64) -> torch.Tensor:
        """Translate images (N, C, H, W) in [-1, 1] from one domain to the other, in eval mode; returns
        float32 images on the CPU. H and W must be divisible by 2**n_downsampling (any size works, the
        networks are convolutional; the training resolution works best)."""
        net = self.generator(direction, use_ema=use_ema)
        c_in, factor = self.input_channels(direction), 2**self.config.n_downsampling
        if x.dim() != 4 or x.shape[1] != c_in:
            raise ValueError(f"{direction} takes images of shape (N, {c_in}, H, W), got {tuple(x.shape)}")
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by {factor}")
        if min(x.shape[-2:]) < self.min_size:  # the 7x7 reflection padding needs more than 3 pixels a side
            raise ValueError(f"image size {tuple(x.shape[-2:])} is too small for this model: at least "
                             f"{self.min_size} pixels a side")
        was_training = net.training
        net.eval()
        device = next(net.parameters()).device
        out = [net(x[i : i + batch_size].to(device).float()).float().cpu() for i in range(0, x.shape[0], batch_size)]
        net.train(was_training)
        return torch.cat(out) if out else x.new_empty(0, self.output_channels(direction), *x.shape[-2:]).float()

    def sample(self, *args, **kwargs):
        raise ValueError("a CycleGAN translates images rather than sampling them: use `atelier translate RUN INPUT`")


@register_model("cyclegan")
def cyclegan(**kwargs) -> CycleGAN:
    """A configurable CycleGAN; keyword arguments are the fields of :class:`CycleGANConfig`.

    ``channels`` (the single-dataset convention of the other families) sets both domains' channels."""
    if "channels" in kwargs:
        channels = kwargs.pop("channels")
        kwargs.setdefault("channels_a", channels)
        kwargs.setdefault("channels_b", channels)
    return CycleGAN(CycleGANConfig(**kwargs))
