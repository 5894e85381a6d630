"""A textbook eager SNGAN (ResNet generator and discriminator, spectral norm, hinge loss), the
baseline the residual GAN's throughput is compared against.

It follows the well-known PyTorch ports of SNGAN's CIFAR-10 networks (Miyato et al. 2018; Miyato &
Koyama 2018 for the class-conditional batch norm and the projection head), written plainly with no
speed tricks: nn.Module blocks, ``torch.nn.utils.spectral_norm`` hooks, upsample-then-conv and
conv-then-pool as written in the paper, default Adam (2e-4, betas (0, 0.9)), fp32, contiguous tensors,
the discriminator scoring real and fake batches in separate passes, ``n_dis`` discriminator steps per
generator step with a fresh fake batch for the generator, and an exponential moving average of the
generator. It lives here, not in the package: it is a yardstick.

Widths are constant across blocks (``g_ch`` in the generator, ``d_ch`` in the discriminator), as in
SNGAN's CIFAR-10 networks; the generator starts from a 4x4 map (7x7 for 28 px).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


class CondBatchNorm(nn.Module):
    def __init__(self, ch: int, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.bn = nn.BatchNorm2d(ch, affine=n_classes == 0)
        if n_classes:
            self.gamma = nn.Embedding(n_classes, ch)
            self.beta = nn.Embedding(n_classes, ch)
            nn.init.ones_(self.gamma.weight)
            nn.init.zeros_(self.beta.weight)

    def forward(self, x, y=None):
        out = self.bn(x)
        if self.n_classes:
            out = self.gamma(y).view(-1, out.shape[1], 1, 1) * out + self.beta(y).view(-1, out.shape[1], 1, 1)
        return out


class GenBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, n_classes: int) -> None:
        super().__init__()
        self.b1 = CondBatchNorm(in_ch, n_classes)
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.b2 = CondBatchNorm(out_ch, n_classes)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.c_sc = nn.Conv2d(in_ch, out_ch, 1, 1, 0)
        nn.init.xavier_uniform_(self.c1.weight, 2**0.5)
        nn.init.xavier_uniform_(self.c2.weight, 2**0.5)
        nn.init.xavier_uniform_(self.c_sc.weight, 1.0)

    def forward(self, x, y=None):
        h = F.relu(self.b1(x, y))
        h = F.interpolate(h, scale_factor=2)
        h = self.c1(h)
        h = F.relu(self.b2(h, y))
        h = self.c2(h)
        return h + self.c_sc(F.interpolate(x, scale_factor=2))


class Generator(nn.Module):
    def __init__(self, nz: int = 128, g_ch: int = 256, nc: int = 3, resolution: int = 32, n_classes: int = 0) -> None:
        super().__init__()
        self.bottom = 7 if resolution in (14, 28, 56) else 4
        n_blocks = {4: {16: 2, 32: 3, 64: 4, 128: 5}, 7: {28: 2, 56: 3}}[self.bottom][resolution]
        self.g_ch = g_ch
        self.l1 = nn.Linear(nz, self.bottom * self.bottom * g_ch)
        self.blocks = nn.ModuleList([GenBlock(g_ch, g_ch, n_classes) for _ in range(n_blocks)])
        self.b_out = nn.BatchNorm2d(g_ch)
        self.c_out = nn.Conv2d(g_ch, nc, 3, 1, 1)
        nn.init.xavier_uniform_(self.l1.weight, 1.0)
        nn.init.xavier_uniform_(self.c_out.weight, 1.0)

    def forward(self, z, y=None):
        h = self.l1(z).view(-1, self.g_ch, self.bottom, self.bottom)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.c_out(F.relu(self.b_out(h))))


class OptimizedDisBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.c_sc = nn.Conv2d(in_ch, out_ch, 1, 1, 0)
        nn.init.xavier_uniform_(self.c1.weight, 2**0.5)
        nn.init.xavier_uniform_(self.c2.weight, 2**0.5)
        nn.init.xavier_uniform_(self.c_sc.weight, 1.0)
        self.c1, self.c2, self.c_sc = spectral_norm(self.c1), spectral_norm(self.c2), spectral_norm(self.c_sc)

    def forward(self, x):
        h = self.c1(x)
        h = F.relu(h)
        h = self.c2(h)
        h = F.avg_pool2d(h, 2)
        return h + self.c_sc(F.avg_pool2d(x, 2))


class DisBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        self.learnable_sc = in_ch != out_ch or downsample
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        nn.init.xavier_uniform_(self.c1.weight, 2**0.5)
        nn.init.xavier_uniform_(self.c2.weight, 2**0.5)
        self.c1, self.c2 = spectral_norm(self.c1), spectral_norm(self.c2)
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, 1, 0)
            nn.init.xavier_uniform_(self.c_sc.weight, 1.0)
            self.c_sc = spectral_norm(self.c_sc)

    def forward(self, x):
        h = self.c1(F.relu(x))
        h = self.c2(F.relu(h))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        sc = x
        if self.learnable_sc:
            sc = self.c_sc(sc)
            if self.downsample:
                sc = F.avg_pool2d(sc, 2)
        return h + sc


class Discriminator(nn.Module):
    def __init__(self, d_ch: int = 128, nc: int = 3, resolution: int = 32, n_classes: int = 0,
                 n_plain: int = 2) -> None:
        super().__init__()
        bottom = 7 if resolution in (14, 28, 56) else 4
        size, blocks = resolution // 2, [OptimizedDisBlock(nc, d_ch)]
        while size > 2 * bottom:
            blocks.append(DisBlock(d_ch, d_ch, downsample=True))
            size //= 2
        blocks += [DisBlock(d_ch, d_ch, downsample=False) for _ in range(n_plain)]
        self.blocks = nn.Sequential(*blocks)
        self.l5 = nn.Linear(d_ch, 1)
        nn.init.xavier_uniform_(self.l5.weight, 1.0)
        self.l5 = spectral_norm(self.l5)
        self.embed = spectral_norm(nn.Embedding(n_classes, d_ch)) if n_classes else None

    def forward(self, x, y=None):
        h = self.blocks(x)
        h = F.relu(h)
        h = h.sum(dim=(2, 3))
        out = self.l5(h)
        if self.embed is not None:
            out = out + (self.embed(y) * h).sum(dim=1, keepdim=True)
        return out


class ReferenceResNetGAN:
    """Networks, optimisers and one training step: ``step(real)`` updates D once, and G every n_dis-th call."""

    def __init__(self, resolution: int = 32, nc: int = 3, nz: int = 128, g_ch: int = 256, d_ch: int = 128,
                 n_classes: int = 0, n_dis: int = 5, lr: float = 2e-4, ema_decay: float = 0.999) -> None:
        self.nz, self.n_classes, self.n_dis, self.ema_decay = nz, n_classes, n_dis, ema_decay
        self.G = Generator(nz, g_ch, nc, resolution, n_classes)
        self.D = Discriminator(d_ch, nc, resolution, n_classes)
        self.G_ema = copy.deepcopy(self.G)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr, betas=(0.0, 0.9))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr, betas=(0.0, 0.9))
        self.iteration = 0

    def _labels(self, b: int):
        return torch.randint(0, self.n_classes, (b,)) if self.n_classes else None

    def step(self, real: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[float, float | None]:
        b = real.shape[0]
        # discriminator: hinge loss, real and fake in separate passes
        y_fake = self._labels(b)
        with torch.no_grad():
            fake = self.G(torch.randn(b, self.nz), y_fake)
        loss_d = F.relu(1.0 - self.D(real, labels)).mean() + F.relu(1.0 + self.D(fake, y_fake)).mean()
        self.opt_d.zero_grad()
        loss_d.backward()
        self.opt_d.step()
        self.iteration += 1
        if self.iteration % self.n_dis:
            return loss_d.item(), None
        # generator: a fresh fake batch, scored by the updated discriminator
        y_fake = self._labels(b)
        loss_g = -self.D(self.G(torch.randn(b, self.nz), y_fake), y_fake).mean()
        self.opt_g.zero_grad()
        loss_g.backward()
        self.opt_g.step()
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.mul_(self.ema_decay).add_(p, alpha=1 - self.ema_decay)
            for b_ema, b_src in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b_src)
        return loss_d.item(), loss_g.item()
