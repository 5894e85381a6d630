"""Shared building blocks for the model families. Import these; never copy them into a model file."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

NORMS = ("batch", "spectral", "none")


def maybe_spectral(layer: nn.Module, use: bool) -> nn.Module:
    """Wrap ``layer`` in spectral normalisation (Miyato et al. 2018) when ``use`` is true."""
    return spectral_norm(layer) if use else layer


class InstanceNorm2d(nn.InstanceNorm2d):
    """Instance normalisation (Ulyanov et al. 2017), by default with a learned per-channel scale and
    shift (``affine=True``, unlike torch's default). (B, C, H, W) -> (B, C, H, W).

    The same module as ``nn.InstanceNorm2d(channels, affine=affine)`` (same ``weight``/``bias`` state,
    no running statistics, ``isinstance`` of it), computed as group norm with one group per channel:
    the same function, but it keeps channels-last input channels-last where torch's instance norm
    returns a contiguous tensor (so every following conv switches format), which makes networks run
    channels-last faster on the CPU. Unbatched (C, H, W) input takes torch's path.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, *, affine: bool = True) -> None:
        super().__init__(num_features, eps=eps, affine=affine, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            return super().forward(x)
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} channels, got input of shape {tuple(x.shape)}")
        if x.shape[2] * x.shape[3] == 1:  # as torch: a single value per channel has no statistics
            raise ValueError(f"expected more than 1 spatial element, got input of shape {tuple(x.shape)}")
        return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)


def norm2d(kind: str, channels: int) -> nn.Module:
    """The feature normalisation after a conv: batch norm, instance norm (:class:`InstanceNorm2d`, with
    a learned scale and shift, as in image-to-image networks), or nothing (spectral norm acts on weights)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return InstanceNorm2d(channels)
    if kind in ("none", "spectral"):
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose from {NORMS + ('instance',)}")


def up_block(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    """Transposed conv that doubles the size. (B, c_in, H, W) -> (B, c_out, 2H, 2W)."""
    conv = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=norm != "batch")
    return nn.Sequential(maybe_spectral(conv, norm == "spectral"), norm2d(norm, c_out), nn.ReLU(inplace=True))


def down_block(c_in: int, c_out: int, norm: str, *, first: bool = False) -> nn.Sequential:
    """Strided conv that halves the size. (B, c_in, H, W) -> (B, c_out, H/2, W/2).

    The first block of a DCGAN discriminator has no normalisation (Radford et al. 2016).
    """
    use_bn = norm == "batch" and not first
    conv = nn.Conv2d(c_in, c_out, 4, 2, 1, bias=not use_bn)
    layers: list[nn.Module] = [maybe_spectral(conv, norm == "spectral")]
    if use_bn:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def conv_norm_relu(c_in: int, c_out: int, kernel: int, norm: str, *, stride: int = 1,
                   relu: bool = True) -> nn.Sequential:
    """Reflection-padded conv, :func:`norm2d` of kind ``norm``, then ReLU unless ``relu=False``: the unit
    of ResNet-style image-to-image networks (the fast-style transformer net, the CycleGAN generator).
    The conv has a bias only without a norm (a norm's shift replaces it).

    (B, c_in, H, W) -> (B, c_out, H/stride, W/stride); modules ``0`` conv, ``1`` norm, ``2`` ReLU."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, padding_mode="reflect", bias=norm == "none")
    layers: list[nn.Module] = [conv, norm2d(norm, c_out)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """x + (conv, norm, ReLU, conv, norm)(x) with reflection padding: Johnson et al. (2016)'s block
    without the final ReLU, as in the fast-style transformer net and the CycleGAN generator.
    (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, kernel: int = 3, norm: str = "instance") -> None:
        super().__init__()
        self.body = nn.Sequential(conv_norm_relu(channels, channels, kernel, norm),
                                  conv_norm_relu(channels, channels, kernel, norm, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@torch.no_grad()
def dcgan_init(module: nn.Module) -> None:
    """The DCGAN initialisation: conv weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def start_size(resolution: int) -> tuple[int, int]:
    """Split a resolution into (start, n_doublings) with start in {4, 7}: 28 -> (7, 2), 64 -> (4, 4)."""
    for start in (4, 7):
        n, size = 0, resolution
        while size > start and size % 2 == 0:
            size //= 2
            n += 1
        if size == start and n >= 1:
            return start, n
    raise ValueError(f"unsupported resolution {resolution}: use 4*2^k or 7*2^k (e.g. 28, 32, 64, 128)")


# -- residual GAN blocks (SNGAN/BigGAN): class-conditional batch norm and fused resampling convs -------


def embed_labels(weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rows of an embedding table ``weight`` (K, D) for ``labels``: class indices (B,) give (B, D);
    class weights (B, K) give the weighted sums of the rows (B, D), which mixes classes (class morphs)."""
    if labels.dim() == 2:
        return labels.to(weight.dtype) @ weight
    return F.embedding(labels, weight)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are given per sample, as class-conditional batch norm needs
    (de Vries et al. 2017; Miyato & Koyama 2018): normalise without a learned affine step, then
    ``gain * x + bias`` with the caller's (B, C) gains and biases (e.g. rows of class embeddings). With
    ``conditional=False`` it is plain ``nn.BatchNorm2d`` with its learned affine step.

    (B, C, H, W), affine (gain (B, C), bias (B, C)) -> (B, C, H, W)."""

    def __init__(self, channels: int, conditional: bool = True) -> None:
        super().__init__()
        self.conditional = conditional
        self.bn = nn.BatchNorm2d(channels, affine=not conditional)

    def forward(self, x: torch.Tensor, affine: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        h = self.bn(x)
        if not self.conditional:
            return h
        if affine is None:
            raise ValueError("this batch norm is class-conditional: pass its gains and biases")
        gain, bias = affine
        # cast to the activations' dtype (bf16 under autocast) so the product stays in it
        return torch.addcmul(bias.to(h.dtype)[:, :, None, None], h, gain.to(h.dtype)[:, :, None, None])


def _check_3x3(weight: torch.Tensor) -> None:
    if weight.dim() != 4 or weight.shape[2:] != (3, 3):
        raise ValueError(f"expected a 3x3 conv weight (O, I, 3, 3), got shape {tuple(weight.shape)}")


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``conv2d(interpolate(x, scale_factor=2), weight, bias, padding=1)`` (nearest upsampling, then a
    3x3 conv) computed as one stride-2 transposed conv with a 4x4 kernel: the same function, with
    16/36 of the multiplications, since each output pixel's 3x3 window covers only 2x2 input pixels.
    (B, I, H, W), weight (O, I, 3, 3) -> (B, O, 2H, 2W)."""
    _check_3x3(weight)

    def fold(w: torch.Tensor, dim: int) -> torch.Tensor:  # 3 taps -> the 4 of a stride-2 transposed conv
        w0, w1, w2 = w.unbind(dim)
        return torch.stack([w2, w1 + w2, w0 + w1, w0], dim)

    kernel = fold(fold(weight, 2), 3).transpose(0, 1)  # (I, O, 4, 4), as conv_transpose2d takes it
    return F.conv_transpose2d(x, kernel, bias, stride=2, padding=1)


def conv3x3_avgpool(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``avg_pool2d(conv2d(x, weight, bias, padding=1), 2)`` (a 3x3 conv, then 2x2 average pooling)
    computed as one stride-2 conv with a 4x4 kernel (the 3x3 kernel convolved with the 2x2 box): the
    same function, with 16/36 of the multiplications. (B, I, H, W), weight (O, I, 3, 3) -> (B, O, H/2, W/2)
    for even H, W."""
    _check_3x3(weight)
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"conv3x3_avgpool needs an even height and width, got input of shape {tuple(x.shape)}")

    def fold(w: torch.Tensor, dim: int) -> torch.Tensor:
        w0, w1, w2 = w.unbind(dim)
        return torch.stack([w0, w0 + w1, w1 + w2, w2], dim) * 0.5

    return F.conv2d(x, fold(fold(weight, 2), 3), bias, stride=2, padding=1)
