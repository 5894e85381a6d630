"""Unpaired translation domains built from MNIST: plain digits (A) and the same kind of digits in
another style (B), with no pairs between them.

Domain B applies a deterministic style to MNIST digits: ``thick`` (morphological dilation: every
stroke about two pixels bolder), ``inverted`` (dark digits on white), ``colour`` (an amber digit on
a navy background, RGB), or a combination such as ``thick+colour`` (applied left to right). A and B
draw from *disjoint* halves of each MNIST split (a seeded permutation), so no B image is the styled
twin of an A image: a model can only learn the translation from the two unpaired collections.

The labels are kept (as class sub-folders when written out) only to *measure* whether a translation
preserves the digit; training never sees them.

    >>> d = mnist_domains("thick", n=5000, data_dir="datasets/mnist")
    >>> write_domain_folders(d, "mnist-thick")    # mnist-thick/{a,b}/{train,test}/<digit>/*.png
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from atelier.data.base import DataError, ImageDataset, Message, Option
from atelier.data.images import png_bytes

#: Digit and background colours of the ``colour`` style (RGB).
FOREGROUND, BACKGROUND = (255, 190, 40), (25, 45, 110)


def thicken(images: torch.Tensor) -> torch.Tensor:
    """Grey-level dilation by a 3x3 square: each pixel takes the brightest of its neighbours."""
    return F.max_pool2d(images.float(), 3, stride=1, padding=1).to(torch.uint8)


def invert(images: torch.Tensor) -> torch.Tensor:
    return 255 - images


def colourise(images: torch.Tensor) -> torch.Tensor:
    """Grey ink (N, 1, H, W) -> RGB (N, 3, H, W): the ink level blends the background into the digit colour."""
    if images.shape[1] != 1:
        raise DataError("the colour style applies to grey images; put it last in a combination")
    t = images.float() / 255.0
    fg = torch.tensor(FOREGROUND, dtype=torch.float32).view(1, 3, 1, 1)
    bg = torch.tensor(BACKGROUND, dtype=torch.float32).view(1, 3, 1, 1)
    return (bg + t * (fg - bg)).round_().clamp_(0, 255).to(torch.uint8)


STYLES = {"thick": thicken, "inverted": invert, "colour": colourise}


def parse_style(style: str) -> list[str]:
    parts = [p.strip().lower().replace("color", "colour") for p in style.split("+") if p.strip()]
    bad = [p for p in parts if p not in STYLES]
    if not parts or bad:
        raise DataError(f"unknown style {style!r}: use one of {', '.join(STYLES)} or a combination like thick+colour")
    return parts


def apply_style(images: torch.Tensor, style: str) -> torch.Tensor:
    """uint8 (N, 1, H, W) digits -> uint8 (N, C, H, W) in ``style`` (C = 3 when it includes colour)."""
    for part in parse_style(style):
        images = STYLES[part](images)
    return images


@dataclass
class MnistDomains:
    style: str
    a_train: ImageDataset  # plain digits
    b_train: ImageDataset  # other digits, styled
    a_test: ImageDataset
    b_test: ImageDataset


def _halves(n_total: int, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint random index sets of at most ``n`` each, from a seeded permutation of ``n_total``."""
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    half = n_total // 2
    k = half if n is None else min(n, half)
    return perm[:k].sort().values, perm[half : half + k].sort().values


def mnist_domains(style: str = "thick", *, n: int | None = 5000, n_test: int | None = 2000,
                  data_dir: str | os.PathLike | None = None, resolution: int = 28, seed: int = 0,
                  progress: bool = False, dataset: str = "mnist") -> MnistDomains:
    """Domains A (plain) and B (``style``) from disjoint halves of MNIST's train and test splits,
    ``n`` training and ``n_test`` test images per domain (None: a whole half). ``dataset="digits"``
    builds the same from the bundled 8x8 digits (offline; used by the demo)."""
    from atelier.data.registry import load_dataset

    parse_style(style)
    out = {}
    for split, count, offset in (("train", n, 0), ("test", n_test, 1)):
        data = load_dataset(dataset, split=split, data_dir=data_dir, resolution=resolution, progress=progress)
        ia, ib = _halves(len(data), count, seed * 2 + offset)
        a, b = data.subset(ia), data.subset(ib)
        out[f"a_{split}"] = ImageDataset(a.images, a.labels, a.classes, f"{dataset}-{split}:a",
                                         {"source_index": ia.tolist()})
        out[f"b_{split}"] = ImageDataset(apply_style(b.images, style), b.labels, b.classes,
                                         f"{dataset}-{split}:b:{style}", {"source_index": ib.tolist()})
    return MnistDomains(style, **out)


def write_domain_folders(domains: MnistDomains, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``out/{a,b}/{train,test}/<digit>/<mnist index>.png`` (loadable with ``folder:out/a``, whose
    train/test layout picks the split) and ``out/README.txt``. Written into a temporary folder and
    renamed into place, so a failure leaves nothing half-written."""
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(Message(f"{out} exists and is not empty; choose another folder or pass ",
                                Option("overwrite", "overwrite=True")))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp"))
    try:
        for domain in ("a", "b"):
            for split in ("train", "test"):
                data: ImageDataset = getattr(domains, f"{domain}_{split}")
                for image, label, index in zip(data.images, data.labels.tolist(), data.meta["source_index"]):
                    folder = tmp / domain / split / str(label)
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f"{index:05d}.png").write_bytes(png_bytes(image))
        (tmp / "README.txt").write_text(
            f"Unpaired MNIST domains. a: plain digits; b: style '{domains.style}'. A and B come from disjoint "
            f"halves of each MNIST split (file names are MNIST indices), so there are no pairs.\n"
            f"Sizes: a/train {len(domains.a_train)}, b/train {len(domains.b_train)}, a/test {len(domains.a_test)}, "
            f"b/test {len(domains.b_test)}. Sub-folders are the digit labels (for evaluation only).\n")
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
