"""A textbook eager DCGAN training step, the baseline the benchmarks compare against.

It follows the well-known PyTorch example's architecture and update (Sequential networks, Sigmoid +
BCELoss, default Adam, real and fake scored in separate passes, the generator re-scoring the fake
batch), written plainly with no speed tricks. It lives here, not in the package: it is a yardstick.

Defaults are the example's 64x64 grey model. ``resolution=32, nc=3`` is the plain DCGAN for 32x32
colour that the CIFAR-10 tables start from (one up/down stage fewer). ``num_classes=K`` makes the
textbook conditional DCGAN (Mirza & Osindero 2014, as written in countless tutorials): the one-hot
label is concatenated to z in G and given to D as K constant input planes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _stages(resolution: int) -> int:
    if resolution not in (32, 64):
        raise ValueError(f"the reference DCGAN is built for 32 or 64 px, not {resolution}")
    return 3 if resolution == 64 else 2  # up/down stages between the 4x4 map and the last layer


def reference_generator(nz: int = 100, ngf: int = 64, nc: int = 1, resolution: int = 64) -> nn.Sequential:
    def up(i, o):
        return [nn.ConvTranspose2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True)]

    n = _stages(resolution)
    widths = [ngf * 2**i for i in range(n, -1, -1)]  # 64 px: 8, 4, 2, 1 x ngf; 32 px: 4, 2, 1 x ngf
    layers = [nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
    for a, b in zip(widths[:-1], widths[1:]):
        layers += up(a, b)
    return nn.Sequential(*layers, nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())


def reference_discriminator(ndf: int = 64, nc: int = 1, resolution: int = 64) -> nn.Sequential:
    def down(i, o):
        return [nn.Conv2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.LeakyReLU(0.2, True)]

    n = _stages(resolution)
    widths = [ndf * 2**i for i in range(n + 1)]
    layers = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
    for a, b in zip(widths[:-1], widths[1:]):
        layers += down(a, b)
    return nn.Sequential(*layers, nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False), nn.Sigmoid())


def init_weights(m: nn.Module) -> None:
    name = type(m).__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class ReferenceDCGAN:
    def __init__(self, nz: int = 100, nc: int = 1, lr: float = 2e-4, resolution: int = 64,
                 num_classes: int = 0) -> None:
        self.nz, self.num_classes, self.resolution = nz, num_classes, resolution
        self.G = reference_generator(nz + num_classes, nc=nc, resolution=resolution)
        self.D = reference_discriminator(nc=nc + num_classes, resolution=resolution)
        self.G.apply(init_weights)
        self.D.apply(init_weights)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr, betas=(0.5, 0.999))
        self.criterion = nn.BCELoss()

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, nz) latents (and (B,) labels if conditional) -> (B, nc, R, R) in [-1, 1]."""
        if self.num_classes:
            z = torch.cat([z, F.one_hot(labels, self.num_classes).float()], dim=1)
        return self.G(z[:, :, None, None])

    def score(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            planes = F.one_hot(labels, self.num_classes).float()[:, :, None, None]
            images = torch.cat([images, planes.expand(-1, -1, *images.shape[2:])], dim=1)
        return self.D(images).view(-1)

    def step(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[float, float]:
        b = real.shape[0]
        ones, zeros = torch.ones(b), torch.zeros(b)
        self.D.zero_grad()
        err_real = self.criterion(self.score(real, labels), ones)
        err_real.backward()
        fake = self.generate(torch.randn(b, self.nz), labels)
        err_fake = self.criterion(self.score(fake.detach(), labels), zeros)
        err_fake.backward()
        self.opt_d.step()
        self.G.zero_grad()
        err_g = self.criterion(self.score(fake, labels), ones)
        err_g.backward()
        self.opt_g.step()
        return (err_real + err_fake).item(), err_g.item()
