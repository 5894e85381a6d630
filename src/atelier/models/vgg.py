"""VGG-16/19 convolutional features for perceptual and style losses (Simonyan & Zisserman 2015).

The module mirrors the ``features`` part of the common PyTorch release, so a state dict with keys
``features.N.weight`` / ``features.N.bias`` loads unchanged (the classifier is never built). Layers are
named the way the style-transfer literature names them (``conv1_1``, ``relu1_1``, ``pool1``, ...), and
the network is cut after the deepest layer a loss asks for: Gatys' default losses stop at ``conv5_1``,
so VGG-19's last three convolutions are never run.

Loading weights (file, cache, download, random fallback) lives in :mod:`atelier.models.vgg_weights`;
this file knows nothing about files.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: Convolutions per block; "M" is a 2x2 max pool. Index positions in ``features`` follow from these.
VGG_BLOCKS = {
    "vgg16": (2, 2, 3, 3, 3),
    "vgg19": (2, 2, 4, 4, 4),
}
BLOCK_WIDTHS = (64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POOLS = ("max", "avg")


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB -> the ImageNet-normalised input VGG was trained on. (B, 1|3, H, W) -> (B, 3, H, W);
    grey images are repeated to three channels."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images of shape (B, 1 or 3, H, W), got {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def layer_names(arch: str) -> list[str]:
    """Names of ``features[i]`` for every index i: conv1_1, relu1_1, conv1_2, relu1_2, pool1, ..."""
    if arch not in VGG_BLOCKS:
        raise ValueError(f"unknown VGG architecture {arch!r}; choose from {sorted(VGG_BLOCKS)}")
    names = []
    for block, n_convs in enumerate(VGG_BLOCKS[arch], start=1):
        for i in range(1, n_convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def resolve_layers(arch: str, layers: Sequence[str], pool: str) -> tuple[list[str], tuple[str, ...]]:
    """Check a request for ``layers`` of ``arch``: (names of the layers to build, up to the deepest
    requested one; the requested names, de-duplicated in order). Raises ValueError naming bad input."""
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose from {POOLS}")
    names = layer_names(arch)
    unknown = [n for n in layers if n not in names]
    if unknown or not layers:
        raise ValueError(f"{arch} has no layer(s) {unknown or '(none given)'}; known: {', '.join(names)}")
    wanted = tuple(dict.fromkeys(layers))
    return names[: max(names.index(n) for n in wanted) + 1], wanted


def conv_indices(arch: str) -> list[int]:
    """Indices in ``features`` of the convolutions (the modules that have weights)."""
    return [i for i, n in enumerate(layer_names(arch)) if n.startswith("conv")]


class VGGFeatures(nn.Module):
    """VGG features up to the deepest requested layer; ``forward`` returns {layer name: activation}.

    Inputs are RGB images in [0, 1], shape (B, 3, H, W), any H and W; ImageNet mean/std normalisation
    happens inside. Grey (B, 1, H, W) inputs are repeated to three channels.

    Args:
        arch: ``"vgg19"`` or ``"vgg16"``.
        layers: names to return (see :func:`layer_names`); the network ends at the deepest one.
        pool: ``"max"`` (as trained) or ``"avg"`` (Gatys et al. found average pooling gives smoother
            gradients for synthesis; the weights are the same).
    """

    def __init__(self, arch: str = "vgg19", layers: Sequence[str] = ("relu4_2",), pool: str = "max") -> None:
        super().__init__()
        self.names, self.layers = resolve_layers(arch, layers, pool)
        self.arch = arch
        self.pool = pool
        modules: list[nn.Module] = []
        c_in = 3
        for name in self.names:
            if name.startswith("conv"):
                c_out = BLOCK_WIDTHS[int(name[4]) - 1]
                modules.append(nn.Conv2d(c_in, c_out, 3, padding=1))
                c_in = c_out
            elif name.startswith("relu"):
                # not in-place: a returned relu output must not be overwritten by the next layer
                modules.append(nn.ReLU())
            else:
                modules.append(nn.MaxPool2d(2, 2) if pool == "max" else nn.AvgPool2d(2, 2))
        self.features = nn.Sequential(*modules)
        #: True once real ImageNet weights are loaded (set by the loader); False for random weights.
        self.pretrained = False
        self._wanted = set(self.layers)

    @property
    def depth(self) -> int:
        """How many ``features`` modules are built (the cut point)."""
        return len(self.names)

    def truncated(self, layers: Sequence[str]) -> "VGGFeatures":
        """This network cut after the deepest of ``layers``, sharing its weights (frozen, eval mode), or
        ``self`` when that would not be shallower. E.g. fast-style content targets need only relu2_2, a
        third of the cost of relu4_3."""
        cut = VGGFeatures(self.arch, layers, pool=self.pool)
        if cut.depth >= self.depth:
            return self
        mine = cut.state_dict()
        cut.load_state_dict({k: v for k, v in self.state_dict().items() if k in mine})
        cut.pretrained = self.pretrained
        p = next(self.parameters())
        return cut.to(p.device).eval().requires_grad_(False).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = imagenet_normalize(x)
        out: dict[str, torch.Tensor] = {}
        for name, module in zip(self.names, self.features):
            h = module(h)
            if name in self._wanted:
                out[name] = h
        return out
