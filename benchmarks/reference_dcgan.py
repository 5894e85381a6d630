"""A textbook eager DCGAN 64x64 training step, the baseline the benchmarks compare against.

It follows the well-known PyTorch example's architecture and update (Sequential networks, Sigmoid +
BCELoss, default Adam, real and fake scored in separate passes, the generator re-scoring the fake
batch), written plainly with no speed tricks. It lives here, not in the package: it is a yardstick.
"""

from __future__ import annotations

import torch
from torch import nn


def reference_generator(nz: int = 100, ngf: int = 64, nc: int = 1) -> nn.Sequential:
    def up(i, o):
        return [nn.ConvTranspose2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True)]

    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        *up(ngf * 8, ngf * 4), *up(ngf * 4, ngf * 2), *up(ngf * 2, ngf),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),
    )


def reference_discriminator(ndf: int = 64, nc: int = 1) -> nn.Sequential:
    def down(i, o):
        return [nn.Conv2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.LeakyReLU(0.2, True)]

    return nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
        *down(ndf, ndf * 2), *down(ndf * 2, ndf * 4), *down(ndf * 4, ndf * 8),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(),
    )


def init_weights(m: nn.Module) -> None:
    name = type(m).__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class ReferenceDCGAN:
    def __init__(self, nz: int = 100, nc: int = 1, lr: float = 2e-4) -> None:
        self.nz = nz
        self.G = reference_generator(nz, nc=nc)
        self.D = reference_discriminator(nc=nc)
        self.G.apply(init_weights)
        self.D.apply(init_weights)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr, betas=(0.5, 0.999))
        self.criterion = nn.BCELoss()

    def step(self, real: torch.Tensor) -> tuple[float, float]:
        b = real.shape[0]
        ones, zeros = torch.ones(b), torch.zeros(b)
        self.D.zero_grad()
        err_real = self.criterion(self.D(real).view(-1), ones)
        err_real.backward()
        fake = self.G(torch.randn(b, self.nz, 1, 1))
        err_fake = self.criterion(self.D(fake.detach()).view(-1), zeros)
        err_fake.backward()
        self.opt_d.step()
        self.G.zero_grad()
        err_g = self.criterion(self.D(fake).view(-1), ones)
        err_g.backward()
        self.opt_g.step()
        return float(err_real + err_fake), float(err_g)
