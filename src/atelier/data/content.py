"""Content photos for training a fast-style network: random square crops from a folder of photos of
any sizes, a pure function of the step (so resuming needs no sampler state)."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from atelier.data.base import Batch, DataError
from atelier.data.images import read_image, scan_images
from atelier.device import check_device

_CACHE_BYTES = 512 * 2**20  # keep decoded content photos in memory up to this much
_SHOWN = 5


class ContentSampler:
    """Batches of random square crops from a folder of photos of any sizes, a pure function of the step.

    Image j of the stream (j = step * batch + k) is photo ``perm_e[j mod N]`` of epoch e = j // N,
    with a seeded permutation per epoch, so a resumed run sees the same images. Each photo is first
    shrunk so its shorter side is at most size / crop_scale; a crop covering crop_scale..1 of that
    side is resized to size x size and flipped at random. Unreadable files are named in a warning
    and replaced by the next photo.
    """

    def __init__(self, files: Sequence[Path], size: int, *, seed: int, crop_scale: float, batch_size: int = 4,
                 rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu",
                 channels_last: bool = True) -> None:
        self.files, self.size, self.seed, self.crop_scale = list(files), size, seed, crop_scale
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.device, self.channels_last = check_device(device), channels_last
        self.steps_per_epoch = max(1, math.ceil(len(self.files) / (batch_size * world_size)))
        self.bad: set[Path] = set()
        self._cache: dict[Path, torch.Tensor] = {}
        self._cached_bytes = 0
        self._epoch, self._perm = -1, []

    def __len__(self) -> int:
        return len(self.files)

    def load(self, path: Path) -> torch.Tensor:
        """(3, H, W) uint8, shorter side at most size / crop_scale; cached while memory allows."""
        if path in self._cache:
            return self._cache[path]
        image = read_image(path)  # (3, H, W) float in [0, 1]; raises DataError naming the file
        limit = math.ceil(self.size / self.crop_scale)
        scale = limit / min(image.shape[-2:])
        if scale < 1:
            new = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
            image = F.interpolate(image[None], size=new, mode="bilinear", antialias=True, align_corners=False)[0]
        image = image.mul(255).round_().clamp_(0, 255).to(torch.uint8)
        if self._cached_bytes + image.numel() <= _CACHE_BYTES:
            self._cache[path] = image
            self._cached_bytes += image.numel()
        return image

    def _index(self, j: int) -> int:
        epoch, pos = divmod(j, len(self.files))
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.files), generator=g).tolist()
        return self._perm[pos]

    def _crop(self, image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        h, w = image.shape[-2:]
        u = torch.rand(4, generator=g).tolist()
        side = max(1, round(min(h, w) * (self.crop_scale + (1 - self.crop_scale) * u[0])))
        top, left = int(u[1] * (h - side + 1)), int(u[2] * (w - side + 1))
        crop = image[None, :, top : top + side, left : left + side].float() / 255
        crop = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=side > self.size,
                             align_corners=False).clamp_(0, 1)
        return crop.flip(-1) if u[3] < 0.5 else crop

    def photo(self, j: int) -> tuple[Path, torch.Tensor]:
        """(path, image) of stream position j, skipping unreadable files (each named in one warning)."""
        for offset in range(len(self.files)):
            path = self.files[self._index(j + offset)]
            if path in self.bad:
                continue
            try:
                return path, self.load(path)
            except (DataError, OSError) as exc:
                self.bad.add(path)
                warnings.warn(f"skipping unreadable content image {path}: {exc}", stacklevel=3)
        raise DataError(f"none of the {len(self.files)} content images could be read "
                        f"(first ones: {', '.join(str(p) for p in self.files[:_SHOWN])})")

    def batch(self, step: int, batch_size: int, *, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """(batch_size, 3, size, size) float in [0, 1]: this rank's share of the step's images."""
        first = (step * world_size + rank) * batch_size
        g = torch.Generator().manual_seed(self.seed * 7_919 + step * world_size + rank)
        return torch.cat([self._crop(self.photo(first + k)[1], g) for k in range(batch_size)])

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def __call__(self, step: int) -> Batch:
        """The batch of ``step`` on the training device: photos as floats in [0, 1] (not [-1, 1]: the
        perceptual losses and the style network work on [0, 1] images), no labels."""
        x = self.batch(step, self.batch_size, rank=self.rank, world_size=self.world_size).to(self.device)
        return Batch(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x, None)

    def preview(self, n: int = 4) -> torch.Tensor:
        """(n', 3, size, size) centre crops of the first readable photos, for preview grids."""
        crops = []
        for path in self.files:
            if len(crops) == n:
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    image = self.load(path).float()[None] / 255
                except (DataError, OSError):
                    continue
            side = min(image.shape[-2:])
            top, left = (image.shape[-2] - side) // 2, (image.shape[-1] - side) // 2
            crop = image[..., top : top + side, left : left + side]
            crops.append(F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True,
                                       align_corners=False).clamp(0, 1))
        if not crops:
            raise DataError(f"none of the {len(self.files)} content images could be read")
        return torch.cat(crops)


def content_files(content_dir: str | os.PathLike) -> list[Path]:
    """Image files under ``content_dir`` (recursive); "" means the photos bundled with scikit-image."""
    if not str(content_dir):
        from atelier.data.photos import photo_paths

        files = photo_paths()
        warnings.warn(f"no content_dir given: training on the {len(files)} photos bundled with scikit-image; "
                      "for a model that generalises, point content_dir at COCO or your own photos", stacklevel=3)
        return files
    root = Path(content_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"content_dir {str(content_dir)!r} is not a folder; point it at a folder of photos "
                        "(COCO or your own), or leave it empty for the photos bundled with scikit-image")
    files = scan_images(root)
    if not files:
        raise DataError(f"no images found in {root} (searched recursively for PNG/JPEG/WebP/BMP)")
    return files
