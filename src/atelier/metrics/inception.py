"""The InceptionV3 network behind papers-comparable FID, its input resizing and its weight file.

What this is. FID (Heusel et al. 2017, the TTUR code) embeds images with the pool3 layer of one
specific TensorFlow graph, ``inception-2015-12-05``. That graph is an InceptionV3 that differs from
torchvision's ``inception_v3``: other weights, a 1008-way classifier, BatchNorm eps 0.001, average
pools that ignore the zero padding, and a max pool (not an average pool) in the pool branch of the
last block. pytorch-fid ported those weights to PyTorch (``pt_inception-2015-12-05-6726825d.pth``)
and torch-fidelity ships the same file; :class:`FIDInceptionV3` has exactly that file's ``state_dict``
layout. FID numbers are only comparable with published ones when they come from these weights, so
atelier never substitutes torchvision's ImageNet model here.

Resizing. The reference implementations disagree on how images reach 299x299:

* ``"tf-bilinear"``: TensorFlow 1's ``resize_bilinear(align_corners=False)``, the legacy mode without
  half-pixel centres (source coordinate = dst * in / out). The original TTUR code and torch-fidelity
  resize this way; it is the default and the one to use for numbers next to papers that used them.
* ``"bilinear"``: ``F.interpolate(mode="bilinear", align_corners=False)`` (half-pixel centres, no
  antialiasing), as pytorch-fid does.
* ``"bicubic-antialias"``: antialiased bicubic, close to clean-fid's PIL bicubic resize (clean-fid
  also clips the result to the pixel range; callers who want that clamp to [-1, 1] afterwards).

Hash check. ``INCEPTION_SHA256`` is the full SHA-256 of the weight file. The ``6726825d`` in its name
is, by torch.hub's convention, the first 8 hex digits of that hash; the full value was taken from
several independent projects that pin the same 95,628,359-byte file, and it agrees with the prefix.
Downloaded and user-supplied files are checked against it unless ``verify=False`` is passed (for
deliberately different weights); a mismatch raises :class:`DataError`.

    >>> model = load_inception()                    # cached / downloaded / verified, eval mode
    >>> pool, logits = model(resize_for_inception(images))   # images in [-1, 1]
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from atelier.data.base import Message, Option
from atelier.weights import WeightSpec, check_state_dict, locate_weights, read_state_dict

__all__ = [
    "FIDInceptionV3",
    "INCEPTION_FILENAME",
    "INCEPTION_SHA256",
    "INCEPTION_URL",
    "RESIZE_MODES",
    "inception_weights_path",
    "load_inception",
    "resize_for_inception",
]

INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILENAME}"
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
#: Environment variable that overrides INCEPTION_URL (e.g. an internal mirror).
URL_ENV = "ATELIER_INCEPTION_URL"
RESIZE_MODES = ("tf-bilinear", "bilinear", "bicubic-antialias")

# ------------------------------------------------------------------------------------------ network


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 0.001, as in the TF graph) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3x3(x: torch.Tensor) -> torch.Tensor:
    # TF's SAME-padded average pool divides by the number of real pixels, not by 9.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max3x3(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b/5c/5d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, cin, 35, 35) -> (B, 224 + pool_features, 35, 35)
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg3x3(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 288, 35, 35) -> (B, 768, 17, 17)
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convs (Mixed_6b..6e): 1x1 | 1x7-7x1 | 7x1-1x7-7x1-1x7 | avgpool-1x1."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 768, 17, 17) -> (B, 768, 17, 17)
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = conv(bd)
        bp = self.branch_pool(_avg3x3(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 768, 17, 17) -> (B, 1280, 8, 8)
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 heads (Mixed_7b, 7c). The FID graph pools with an average in
    Mixed_7b and with a 3x3 max in Mixed_7c (``pool="max"``)."""

    def __init__(self, cin: int, pool: str = "avg") -> None:
        super().__init__()
        self.pool = _max3x3 if pool == "max" else _avg3x3
        row, col = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, **row)
        self.branch3x3_2b = BasicConv2d(384, 384, **col)
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, **row)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, **col)
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, cin, 8, 8) -> (B, 2048, 8, 8)
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(self.pool(x))
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 as in TF's 2015-12-05 graph; ``state_dict`` matches ``INCEPTION_FILENAME`` exactly.

    ``forward`` takes float (B, 3, 299, 299) in [-1, 1] (see :func:`resize_for_inception`) and returns
    ``(pool, logits)``: the 2048-d pool3 features FID and KID use, and the 1008-way logits (fc applied
    to pool3) that the Inception Score uses. No auxiliary classifier.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, 3, 299, 299) -> (B, 2048), (B, 1008)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, 299, 299) batch in [-1, 1], got shape {tuple(x.shape)}")
        x = self.Conv2d_1a_3x3(x)  # (B, 32, 149, 149)
        x = self.Conv2d_2a_3x3(x)  # (B, 32, 147, 147)
        x = self.Conv2d_2b_3x3(x)  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_3b_1x1(x)  # (B, 80, 73, 73)
        x = self.Conv2d_4a_3x3(x)  # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (B, 288, 35, 35)
        x = self.Mixed_6a(x)  # (B, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (B, 768, 17, 17)
        x = self.Mixed_7a(x)  # (B, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (B, 2048, 8, 8)
        pool = x.mean(dim=(2, 3))  # (B, 2048) global average pool = pool3
        return pool, self.fc(pool)  # (B, 2048), (B, 1008)


# ----------------------------------------------------------------------------------------- resizing


def _tf_bilinear_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """(out, in) float64 weights of TF1 legacy ``resize_bilinear`` along one axis.

    Output pixel i samples src = i * (in / out) (no half-pixel offset), mixing floor(src) and
    min(floor(src) + 1, in - 1) by the fractional part. TF does this arithmetic in float32, so we do too.
    """
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size
    src = torch.arange(out_size, dtype=torch.float32) * scale  # (out,)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=in_size - 1)
    frac = (src - lo.float()).double()
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    m.index_put_((rows, lo), 1 - frac, accumulate=True)
    m.index_put_((rows, hi), frac, accumulate=True)  # at the edge hi == lo and the weights add to 1
    return m


def resize_for_inception(x: torch.Tensor, size: int | tuple[int, int] = 299, mode: str = "tf-bilinear") -> torch.Tensor:
    """Resize float (B, C, H, W) to (B, C, size, size) the way a reference FID implementation does.

    ``mode`` is one of :data:`RESIZE_MODES` (see the module docstring for which reference each one
    matches). ``size`` may also be an (h, w) pair. The value range is kept (all modes are linear), so
    resizing [-1, 1] images gives what resizing [0, 255] ones and then rescaling would.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; choose one of {', '.join(RESIZE_MODES)}")
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"expected a float (B, C, H, W) tensor, got {x.dtype} of shape {tuple(x.shape)}")
    out_h, out_w = (size, size) if isinstance(size, int) else size
    if mode == "bilinear":
        return F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False)
    if mode == "bicubic-antialias":
        return F.interpolate(x, size=(out_h, out_w), mode="bicubic", antialias=True, align_corners=False)
    # tf-bilinear: separable, so out = Mh @ x @ Mw^T with two small (out, in) matrices.
    dtype = torch.promote_types(x.dtype, torch.float32)  # half inputs are interpolated in float32
    mh = _tf_bilinear_matrix(x.shape[2], out_h).to(x.device, dtype)  # (out_h, H)
    mw = _tf_bilinear_matrix(x.shape[3], out_w).to(x.device, dtype)  # (out_w, W)
    out = mh @ x.to(dtype) @ mw.T  # (B, C, H, W) -> (B, C, out_h, out_w)
    return out.to(x.dtype)


# ------------------------------------------------------------------------------------------ weights

#: The weight file, for :mod:`atelier.weights` (locating, downloading and checking it).
INCEPTION_SPEC = WeightSpec(
    filename=INCEPTION_FILENAME,
    url=INCEPTION_URL,
    sha256=INCEPTION_SHA256,
    what="InceptionV3 FID weights",
    url_env=URL_ENV,
    purpose=(
        f"FID needs the InceptionV3 FID weights ({INCEPTION_FILENAME}, ported from TensorFlow's "
        f"2015-12-05 graph)."
    ),
    hint=Message(
        ", or pass ", Option("inception_weights_path", "--inception-weights PATH"),
        ". Metrics that use a domain-classifier feature extractor work offline without it.",
    ),
)
_MISMATCH_NOTE = " (FID will then not be comparable with published numbers)"


def inception_weights_path(
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    url: str | None = None,
    verify: bool = True,
    sha256: str | None = None,
) -> Path:
    """Locate (and if needed download) the FID InceptionV3 weight file; returns its path.

    Args:
        path: a local weight file to use instead of the cache; it must exist.
        download: fetch the file into ``cache_dir() / "weights"`` when it is not cached yet.
        url: where to download from (default: ``$ATELIER_INCEPTION_URL``, else :data:`INCEPTION_URL`).
        verify: check the file's SHA-256 (cached, downloaded or user-given).
        sha256: expected digest (default :data:`INCEPTION_SHA256`), for mirrors of other weights.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataError: not cached and ``download=False``, the download failed (the message says how to
            supply the file by hand), or the hash does not match.
    """
    return locate_weights(
        INCEPTION_SPEC, path, download=download, url=url, verify=verify, sha256=sha256, note=_MISMATCH_NOTE
    )


def load_inception(
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    url: str | None = None,
    verify: bool = True,
    sha256: str | None = None,
    device: str | torch.device = "cpu",
) -> FIDInceptionV3:
    """The FID InceptionV3 with its weights loaded (strictly), frozen, in eval mode, on ``device``.

    ``path`` may be a ``.pth`` state_dict (read with ``weights_only=True``) or a ``.safetensors`` file;
    the other arguments are those of :func:`inception_weights_path`.
    """
    p = inception_weights_path(path, download=download, url=url, verify=verify, sha256=sha256)
    state = read_state_dict(p, what="InceptionV3 weights")
    model = FIDInceptionV3()
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # BatchNorm fills in a missing num_batches_tracked itself (and FID never reads it).
    check_state_dict(state, wanted, source=p, what="FID InceptionV3", optional=lambda k: k.endswith("num_batches_tracked"))
    model.load_state_dict(state, strict=True)
    return model.requires_grad_(False).eval().to(device)
