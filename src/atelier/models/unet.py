"""A small U-Net for flow and diffusion models at 28-64 px (the DDPM / improved-DDPM design, sized for CPUs).

    x (B, C, R, R), t (B,) in [0, 1], labels (B,) or None -> (B, C, R, R)

- The time enters as a sinusoidal embedding of 1000 t through a two-layer MLP; a class label (index
  ``num_classes`` is the "no label" class that classifier-free guidance trains and samples with) adds
  its own embedding to it. Every residual block turns that vector into a per-channel scale and shift
  after its second group norm (adaptive group norm, Dhariwal & Nichol 2021).
- Encoder: a 3x3 conv to ``width`` channels, then per level ``blocks_per_level`` residual blocks at
  ``width * mult`` channels and a strided 3x3 conv halving the size (none after the last level).
- Middle: residual block, self-attention (optional), residual block, at the lowest resolution.
- Decoder: the mirror, each residual block taking the matching encoder output concatenated (the skip),
  a nearest upsample + 3x3 conv doubling the size; group norm, SiLU and a zero-initialised 3x3 conv
  to the output (the network starts by predicting 0).
- Self-attention runs only at the lowest resolution (``attention``), where it is cheap (at 28 px the
  map is 7x7): ``torch.nn.functional.scaled_dot_product_attention``, which picks a fused kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from atelier.models.layers import embed_labels


def _groups(channels: int) -> int:
    """Group-norm groups: 32 as in DDPM where the channels allow it (at least 4 per group), else fewer."""
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0 and channels // g >= 4:
            return g
    return 1


def time_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """(B,) times in [0, 1] -> (B, dim) sinusoids of 1000 t at geometrically spaced frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    emb = torch.cat([angles.cos(), angles.sin()], dim=1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    """GN-SiLU-conv3x3, then GN * (1 + scale) + shift from the embedding, SiLU, dropout, conv3x3 (zero
    initialised: the block starts as its shortcut), plus the input (a 1x1 conv where channels change)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the positions of a (B, C, H, W) map, with a residual connection."""

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads if channels % heads == 0 else 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C / heads)
        return x + self.out(a.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """See the module docstring. ``mults``: channel multiple of each level (its length is the number of
    levels; each level but the last halves the size, so the resolution must divide by 2^(levels - 1))."""

    def __init__(self, *, channels: int, width: int = 64, mults: tuple[int, ...] = (1, 2, 2),
                 blocks_per_level: int = 2, attention: bool = True, dropout: float = 0.0,
                 num_classes: int = 0) -> None:
        super().__init__()
        emb_dim = 4 * width
        self.width = width
        self.time_mlp = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # row num_classes: "no label" (classifier-free guidance's unconditional model)
        self.class_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.num_classes = num_classes

        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch = [width], width
        for level, mult in enumerate(mults):
            for _ in range(blocks_per_level):
                self.down.append(ResBlock(ch, width * mult, emb_dim, dropout))
                ch = width * mult
                skips.append(ch)
            if level < len(mults) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = ResBlock(ch, ch, emb_dim, dropout)
        self.mid_attn = Attention(ch) if attention else None
        self.mid2 = ResBlock(ch, ch, emb_dim, dropout)
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for _ in range(blocks_per_level + 1):
                self.up.append(ResBlock(ch + skips.pop(), width * mult, emb_dim, dropout))
                ch = width * mult
            if level > 0:
                self.up.append(nn.Conv2d(ch, ch, 3, padding=1))  # after a nearest 2x upsample
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def embed(self, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_mlp(time_embedding(t, self.width).to(self.conv_in.weight.dtype))
        if self.class_embed is not None:
            if labels is None:
                labels = torch.full((t.shape[0],), self.num_classes, dtype=torch.long, device=t.device)
            table = self.class_embed.weight
            # class weights (B, K) mix the K class rows (class morphs), (B, K + 1) all rows; an index may be "no label"
            mixed = labels.dim() == 2 and labels.shape[1] == self.num_classes
            emb = emb + embed_labels(table[: self.num_classes] if mixed else table, labels)
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``labels``: class indices (B,) (``num_classes``, or None for all, is "no label"), or class
        weights (B, num_classes)."""
        emb = self.embed(t, labels)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        h = self.mid1(h, emb)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid2(h, emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))
