"""A random multi-scale feature network: the stand-in for VGG when its ImageNet weights are missing.

Why random features at all. Ustyuzhaninov et al. (2017, "What does it take to generate natural
textures?") showed that Gram-matrix texture synthesis does not need trained filters: one layer of
random convolutions followed by a ReLU synthesises convincing textures, provided the filters span
several spatial scales. Trained VGG features remain better (and are what style transfer is tuned
for), so this network is only a fallback, and the loader says so loudly.

The design. It accepts VGG's layer names and returns activations of the same spatial sizes, so a loss
written for :class:`atelier.models.vgg.VGGFeatures` runs unchanged:

* block B works on the image at scale 2^(B-1) (a binomial blur-and-subsample pyramid with the same
  floor arithmetic as VGG's pools), so block 5 sees 16x coarser structure than block 1;
* ``convB_i`` is its own random filter bank of size k_i = 3, 5, 7, 9 (i = 1..4) applied to that
  image, so one block covers several scales too and an effective receptive field reaches
  9 x 16 = 144 pixels;
* ``reluB_i`` = ReLU(``convB_i``); ``poolB`` = 2x2 max (or average) pool of the block's last ReLU.

Filters are Gaussian, each scaled to unit L2 norm, so on ImageNet-normalised input (values O(1)) an
activation is O(1) at every layer and the Gram matrices of different layers are of similar size. No
filter is forced to zero mean: the DC part of a random filter is what lets the Gram matrices see
colour. Every layer reads the image directly (not the previous layer), so only the requested layers
are computed and a whole forward pass costs a few percent of VGG's.

Weights come from their own ``torch.Generator`` seeded with ``seed``: the same seed gives the same
network on every machine, whatever the global RNG state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from atelier.models.vgg import VGG_BLOCKS, imagenet_normalize, resolve_layers

#: Kernel size of the i-th convolution of a block (i = 1..4).
KERNEL_SIZES = (3, 5, 7, 9)
#: Feature maps per convolution.
DEFAULT_WIDTH = 64


def _half(x: torch.Tensor) -> torch.Tensor:
    """Blur with the binomial [1, 3, 3, 1] / 8 filter and keep every other pixel. (B, C, H, W) ->
    (B, C, H // 2, W // 2), the sizes of VGG's 2x2 pools. Smoother than a 2x2 average, whose gradient
    would print a block grid onto synthesised images; replicated borders keep edges from darkening."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype, device=x.device) / 8
    kernel = (taps[:, None] * taps[None, :]).expand(x.shape[1], 1, 4, 4)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, stride=2, groups=x.shape[1])


class RandomFeatures(nn.Module):
    """Random multi-scale ReLU features under VGG's layer names; ``forward`` returns {name: activation}.

    Args:
        arch: ``"vgg19"`` or ``"vgg16"``: which layer names exist (convolutions per block).
        layers: names to return (see :func:`atelier.models.vgg.layer_names`).
        pool: ``"max"`` or ``"avg"`` for the ``poolB`` layers.
        seed: seeds the filters; the same seed gives the same network.
        width: feature maps per convolution.
    """

    def __init__(self, arch: str = "vgg19", layers: Sequence[str] = ("relu4_2",), pool: str = "max", *,
                 seed: int = 0, width: int = DEFAULT_WIDTH) -> None:
        super().__init__()
        self.names, self.layers = resolve_layers(arch, layers, pool)
        self.arch, self.pool, self.seed, self.width = arch, pool, int(seed), int(width)
        #: Never ImageNet weights; the loader's description says what this network is.
        self.pretrained = False
        self.description = f"random multi-scale features (seed {self.seed}), not pretrained"

        # Filters are drawn for every convolution of the architecture in a fixed order, so a layer's
        # filters do not depend on which other layers were requested.
        generator = torch.Generator().manual_seed(self.seed)
        convs = {}
        for block, n_convs in enumerate(VGG_BLOCKS[arch], start=1):
            for i in range(1, n_convs + 1):
                k = KERNEL_SIZES[(i - 1) % len(KERNEL_SIZES)]
                w = torch.randn(self.width, 3, k, k, generator=generator)
                w = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # unit norm: O(1) activations
                name = f"conv{block}_{i}"
                if name in self.names:
                    convs[name] = nn.Parameter(w, requires_grad=False)
        self.weights = nn.ParameterDict(convs)

    @property
    def depth(self) -> int:
        """How many VGG layers the requested ones reach (the cut point, as in VGGFeatures)."""
        return len(self.names)

    def extra_repr(self) -> str:
        return f"arch={self.arch}, layers={list(self.layers)}, pool={self.pool}, seed={self.seed}, width={self.width}"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        scales = [imagenet_normalize(x)]  # scales[b - 1]: the image at 1 / 2^(b-1), (B, 3, H >> b-1, W >> b-1)
        convs: dict[str, torch.Tensor] = {}

        def image(block: int) -> torch.Tensor:
            while len(scales) < block:
                scales.append(_half(scales[-1]))
            return scales[block - 1]

        def conv(name: str) -> torch.Tensor:  # "convB_i" -> (B, width, H >> B-1, W >> B-1)
            if name not in convs:
                w = self.weights[name]
                p = w.shape[-1] // 2  # replicated borders: zeros would read as a grey frame around the image
                convs[name] = F.conv2d(F.pad(image(int(name[4])), (p, p, p, p), mode="replicate"), w.to(x.dtype))
            return convs[name]

        out: dict[str, torch.Tensor] = {}
        for name in self.layers:
            if name.startswith("conv"):
                out[name] = conv(name)
            elif name.startswith("relu"):
                out[name] = F.relu(conv("conv" + name[4:]))
            else:  # poolB: pool of the block's last ReLU, as in VGG
                block = int(name[4])
                last = F.relu(conv(f"conv{block}_{VGG_BLOCKS[self.arch][block - 1]}"))
                out[name] = F.max_pool2d(last, 2) if self.pool == "max" else F.avg_pool2d(last, 2)
        return out
