"""The feed-forward image transformation network of fast style transfer.

Johnson et al. (2016), "Perceptual losses for real-time style transfer", with the instance
normalisation of Ulyanov et al. (2017) in place of batch norm, and nearest-neighbour upsampling
followed by a convolution in place of transposed convolutions (Odena et al. 2016: no checkerboard
artefacts)::

    (B, 3, H, W) --end conv (k x k)--> (B, w, H, W) --2 strided convs--> (B, 4w, H/4, W/4)
                 --n residual blocks--> (B, 4w, H/4, W/4) --2 x (upsample, conv)--> (B, w, H, W)
                 --end conv (k x k)--> (B, 3, H, W) --sigmoid--> [0, 1]

Every convolution pads by reflection. Inputs of any size work: they are padded up to a multiple of
the downsampling factor and the output is cropped back to the input size.

Two presets (:data:`PRESETS`): ``"johnson"`` is the original (widths 32/64/128, five residual blocks,
9x9 end convolutions, about 20 GFLOP per 256 px image); ``"fast"``, the default, halves the widths
and uses 3x3 end convolutions (4.6 GFLOP, 0.42 M parameters against 1.68 M) so that a CPU
stylises 256 px images in real time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Literal

import annotated_types as at
import torch
import torch.nn.functional as F
from torch import nn

from atelier.config import Config, Width
from atelier.models.layers import InstanceNorm2d, ResidualBlock, conv_norm_relu, norm2d
from atelier.models.pretrained import PretrainedMixin
from atelier.models.registry import register_model

__all__ = ["InstanceNorm2d", "PRESETS", "TransformerNet", "TransformerNetConfig", "transformer_net",
           "transformer_net_johnson"]  # InstanceNorm2d (from layers): the norm of this network


Kernel = Annotated[int, at.Interval(ge=1, le=63)]  # a convolution's kernel size (odd)


@dataclass
class TransformerNetConfig(Config):
    width: Width = 16  # channels at full resolution; 2x and 4x after the two downsamplings
    n_res_blocks: Annotated[int, at.Interval(ge=0, le=256)] = 5
    end_kernel: Kernel = 3  # kernel of the first and last convolutions (Johnson: 9)
    kernel: Kernel = 3  # kernel of every other convolution
    n_down: Annotated[int, at.Interval(ge=0, le=8)] = 2  # strided convolutions (and upsamplings); the input is padded to a multiple of 2**n_down
    upsample: Literal["nearest", "transpose"] = "nearest"  # nearest: upsample then conv (no checkerboard) |
    # transpose: transposed conv
    norm: Literal["instance", "none"] = "instance"  # instance: InstanceNorm2d with a learned scale and shift

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.end_kernel % 2 == 0 or self.kernel % 2 == 0:
            raise ValueError(f"kernel sizes must be odd, got end_kernel={self.end_kernel}, kernel={self.kernel}")

    @property
    def factor(self) -> int:
        """Total downsampling factor: the padded input size is a multiple of it."""
        return 2**self.n_down

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TransformerNetConfig:
        """``TransformerNetConfig.from_preset("johnson", n_res_blocks=3)``: a preset with some fields changed."""
        if name not in PRESETS:
            raise ValueError(f"unknown transformer-net preset {name!r}; choose from {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def preset_name(self) -> str | None:
        """The preset this config equals, if any (for logs and reports)."""
        values, defaults = asdict(self), asdict(TransformerNetConfig())
        return next((name for name, p in PRESETS.items() if values == {**defaults, **p}), None)


#: Named architectures. "fast" is the default config; "johnson" is the network of the paper.
PRESETS: dict[str, dict] = {
    "fast": {},
    "johnson": {"width": 32, "end_kernel": 9},
}


class Upsample(nn.Module):
    """Double the size. nearest: upsample then a reflection-padded conv; transpose: a transposed conv.

    (B, c_in, H, W) -> (B, c_out, 2H, 2W), then norm and ReLU.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, norm: str, mode: str) -> None:
        super().__init__()
        self.mode = mode
        if mode == "nearest":
            self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, padding_mode="reflect", bias=norm == "none")
        else:
            self.conv = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=norm == "none")
        self.norm = norm2d(norm, c_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.relu(self.norm(self.conv(x)))


class TransformerNet(PretrainedMixin, nn.Module):
    """Image -> stylised image, both (B, 3, H, W) RGB in [0, 1], any H and W (grey (B, 1, H, W) is repeated)."""

    family = "fast-style"
    tasks = ("stylize",)
    family_aliases = ("transformer-net",)  # saved by versions before the family registry
    config_class = TransformerNetConfig

    def __init__(self, config: TransformerNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or TransformerNetConfig()
        self.config = cfg
        w, k = cfg.width, cfg.kernel
        widths = [w * 2**i for i in range(cfg.n_down + 1)]  # [w, 2w, 4w] for two downsamplings
        # (B, 3, H, W) -> (B, w, H, W) -> ... -> (B, 4w, H/4, W/4)
        down = [conv_norm_relu(3, w, cfg.end_kernel, cfg.norm)]
        down += [conv_norm_relu(a, b, k, cfg.norm, stride=2) for a, b in zip(widths[:-1], widths[1:])]
        self.down = nn.Sequential(*down)
        self.res = nn.Sequential(*[ResidualBlock(widths[-1], k, cfg.norm) for _ in range(cfg.n_res_blocks)])
        # (B, 4w, H/4, W/4) -> (B, w, H, W)
        rev = widths[::-1]
        self.up = nn.Sequential(*[Upsample(a, b, k, cfg.norm, cfg.upsample) for a, b in zip(rev[:-1], rev[1:])])
        # (B, w, H, W) -> (B, 3, H, W) logits; a sigmoid maps them to [0, 1]
        self.to_rgb = nn.Conv2d(w, 3, cfg.end_kernel, padding=cfg.end_kernel // 2, padding_mode="reflect")

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Pad bottom/right up to a multiple of the downsampling factor, and to at least the size every
        reflection pad needs; reflection where the image is large enough, else edge replication."""
        f = self.config.factor
        pad_for_convs = max(self.config.end_kernel, self.config.kernel) // 2 + 1
        h, w = x.shape[-2:]
        min_side = f * pad_for_convs
        th = max(-(-h // f) * f, min_side)
        tw = max(-(-w // f) * f, min_side)
        if (th, tw) == (h, w):
            return x
        pads = (0, tw - w, 0, th - h)
        mode = "reflect" if tw - w < w and th - h < h else "replicate"
        return F.pad(x, pads, mode=mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images of shape (B, 1 or 3, H, W), got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        y = self.to_rgb(self.up(self.res(self.down(self._pad(x)))))
        return torch.sigmoid(y[..., :h, :w])


@register_model("transformer-net")
def transformer_net(preset: str = "fast", **kwargs) -> TransformerNet:
    """Fast style transfer network; ``preset`` "fast" (default) or "johnson", keywords override fields."""
    return TransformerNet(TransformerNetConfig.from_preset(preset, **kwargs))


@register_model("transformer-net-johnson")
def transformer_net_johnson(**kwargs) -> TransformerNet:
    """Johnson et al.'s original network (32/64/128 channels, 5 residual blocks, 9x9 end convolutions)."""
    return TransformerNet(TransformerNetConfig.from_preset("johnson", **kwargs))
