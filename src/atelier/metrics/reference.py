"""Reference statistics of real data, computed once and cached.

The real side of FID/KID/precision-recall depends only on the data and the extractor, so its
features, Gaussian statistics (float64) and k-NN radii are stored in
``$ATELIER_HOME/reference/<name>.safetensors`` keyed by dataset, split, extractor name and weights
hash, resolution, channels, sample count, seed and a SHA-256 of the exact images used. A changed
dataset folder or re-fitted classifier therefore never reuses stale statistics.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from atelier.data import ImageDataset, cache_dir
from atelier.metrics.extractors import FeatureExtractor
from atelier.metrics.frechet import FeatureStats, feature_stats
from atelier.metrics.knn import kth_neighbour_sq_dist
from atelier.signals import ShouldStop

#: k of the precision/recall and of the density/coverage radii kept with the reference.
RADII_KS = (3, 5)


@dataclass
class Reference:
    images: torch.Tensor  # (N, C, H, W) uint8, the real images used
    features: torch.Tensor  # (N, D) float32
    logits: torch.Tensor | None  # (N, K)
    stats: FeatureStats
    radii: dict[int, torch.Tensor]  # k -> (N,) squared k-NN radius
    meta: dict  # dataset, split, n, seed, resolution, channels, extractor, fingerprint
    cached: bool  # whether this came from the cache


def select_images(data: ImageDataset, n: int | None, seed: int) -> torch.Tensor:
    """The first ``n`` of a seeded permutation (all images, in order, when n is None or >= N)."""
    if n is None or n >= len(data):
        return data.images
    g = torch.Generator().manual_seed(seed)
    return data.images[torch.randperm(len(data), generator=g)[:n].sort().values]


def _key(meta: dict) -> str:
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{meta['dataset']}-{meta['split']}-{meta['extractor']}")[-60:]
    return f"{slug}-r{meta['resolution']}-n{meta['n']}-{digest}"


def reference_path(meta: dict) -> Path:
    return cache_dir() / "reference" / f"{_key(meta)}.safetensors"


def compute_reference(data: ImageDataset, extractor: FeatureExtractor, *, split: str, n: int | None = None,
                      seed: int = 0, cache: bool = True, batch_size: int = 500, progress: bool = False,
                      should_stop: ShouldStop | None = None) -> Reference:
    """Features, statistics and radii of ``n`` images of ``data`` (a seeded subset), from the cache
    when an entry with the same key exists, else computed and (with ``cache``) stored atomically.
    ``should_stop`` is asked between batches; True raises :class:`atelier.signals.Stopped` before
    anything is cached."""
    from atelier.io import atomic_write_json, load_tensors, save_tensors

    images = select_images(data, n, seed)
    meta = {
        "dataset": data.name.split(":", 1)[0] if data.name.split(":", 1)[0] in ("mnist", "digits", "cifar10") else data.name,
        "split": split, "n": int(images.shape[0]), "seed": seed,
        "resolution": int(images.shape[-1]), "channels": int(images.shape[1]),
        "extractor": extractor.name, "extractor_sha256": extractor.sha256, "resize": extractor.resize,
        "images_sha256": hashlib.sha256(images.contiguous().numpy().tobytes()).hexdigest(),
    }
    path = reference_path(meta)
    if cache and path.is_file() and path.with_suffix(".json").is_file():
        try:
            t = load_tensors(path)
            radii = {k: t[f"radius_{k}"] for k in RADII_KS}
            stats = FeatureStats(t["mean"], t["cov"], meta["n"])
            return Reference(images, t["features"], t.get("logits"), stats, radii, meta, cached=True)
        except (ValueError, KeyError) as exc:  # a damaged cache entry is recomputed, never trusted
            warnings.warn(f"{path}: unreadable reference statistics ({exc}); computing them again")
    out = extractor(images, batch_size=batch_size, progress=progress, should_stop=should_stop)
    stats = feature_stats(out.features)
    radii = kth_neighbour_sq_dist(out.features, RADII_KS)
    if cache:
        tensors = {"features": out.features, "mean": stats.mean, "cov": stats.cov,
                   **{f"radius_{k}": r for k, r in radii.items()}}
        if out.logits is not None:
            tensors["logits"] = out.logits
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(tensors, path)
        atomic_write_json(path.with_suffix(".json"), meta)
    return Reference(images, out.features, out.logits, stats, radii, meta, cached=False)
