"""A textbook eager flow-matching step on the DDPM-style U-Net: the baseline atelier's flow step is timed
against (``train_throughput.py --model flow``).

The same architecture as ``atelier.models.unet.UNet`` (residual blocks with group norm, SiLU and a
scale-shift time embedding, strided-conv downsampling, nearest-upsample + conv, self-attention at the
lowest resolution, skips concatenated), written the way tutorials write it: attention as an explicit
softmax of QK^T, the time embedding recomputed in every block call, fp32, contiguous tensors, default
Adam, uniform times. Not used by the library.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / half)
    args = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def groups(c: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if c % g == 0 and c // g >= 4:
            return g
    return 1


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb: int) -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(groups(c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.e = nn.Linear(emb, 2 * c_out)
        self.n2, self.c2 = nn.GroupNorm(groups(c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, emb):
        h = self.c1(F.silu(self.n1(x)))
        scale, shift = self.e(F.silu(emb)).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        h = self.c2(F.silu(self.n2(h) * (1 + scale) + shift))
        return self.skip(x) + h


class Attn(nn.Module):
    def __init__(self, c: int, heads: int = 4) -> None:
        super().__init__()
        self.h = heads if c % heads == 0 else 1
        self.n, self.qkv, self.o = nn.GroupNorm(groups(c), c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, hh, ww = x.shape
        q, k, v = self.qkv(self.n(x)).reshape(b, 3, self.h, c // self.h, hh * ww).unbind(1)
        w = torch.softmax(torch.einsum("bhcn,bhcm->bhnm", q, k) / math.sqrt(c // self.h), dim=-1)
        return x + self.o(torch.einsum("bhnm,bhcm->bhcn", w, v).reshape(b, c, hh, ww))


class ReferenceUNet(nn.Module):
    def __init__(self, channels: int, width: int, mults: tuple[int, ...], blocks: int, attention: bool,
                 num_classes: int = 0) -> None:
        super().__init__()
        emb = 4 * width
        self.width = width
        self.t1, self.t2 = nn.Linear(width, emb), nn.Linear(emb, emb)
        self.cls = nn.Embedding(num_classes + 1, emb) if num_classes else None
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.down, skips, ch = nn.ModuleList(), [width], width
        for i, m in enumerate(mults):
            for _ in range(blocks):
                self.down.append(Block(ch, width * m, emb))
                ch = width * m
                skips.append(ch)
            if i < len(mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.m1, self.ma, self.m2 = Block(ch, ch, emb), (Attn(ch) if attention else None), Block(ch, ch, emb)
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(mults))):
            for _ in range(blocks + 1):
                self.up.append(Block(ch + skips.pop(), width * m, emb))
                ch = width * m
            if i > 0:
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.out_n, self.out = nn.GroupNorm(groups(ch), ch), nn.Conv2d(ch, channels, 3, padding=1)

    def forward(self, x, t, labels=None):
        emb = self.t2(F.silu(self.t1(sinusoid(t, self.width))))
        if self.cls is not None:
            emb = emb + self.cls(labels)
        h = self.inp(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, Block) else layer(h)
            hs.append(h)
        h = self.m1(h, emb)
        if self.ma is not None:
            h = self.ma(h)
        h = self.m2(h, emb)
        for layer in self.up:
            if isinstance(layer, Block):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out(F.silu(self.out_n(h)))


class ReferenceFlow:
    """One training step: uniform t, x_t = (1 - t) x + t eps, MSE to eps - x, Adam, EMA of the weights."""

    def __init__(self, *, channels: int, width: int, mults: tuple[int, ...], blocks: int, attention: bool,
                 num_classes: int = 0, lr: float = 1e-3) -> None:
        self.net = ReferenceUNet(channels, width, mults, blocks, attention, num_classes)
        self.ema = ReferenceUNet(channels, width, mults, blocks, attention, num_classes)
        self.ema.load_state_dict(self.net.state_dict())
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.num_classes = num_classes

    def step(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> float:
        t = torch.rand(x.shape[0])
        eps = torch.randn_like(x)
        xt = (1 - t.view(-1, 1, 1, 1)) * x + t.view(-1, 1, 1, 1) * eps
        if labels is not None:
            labels = torch.where(torch.rand(x.shape[0]) < 0.1, torch.full_like(labels, self.num_classes), labels)
        loss = F.mse_loss(self.net(xt, t, labels), eps - x)
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net.parameters()):
                pe.mul_(0.999).add_(p, alpha=0.001)
        return loss.item()
