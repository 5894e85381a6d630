"""k-NN manifold metrics: precision and recall (Kynkäänniemi et al., 2019) and density and
coverage (Naeem et al., 2020).

Each sample's k-NN ball (radius: distance to its k-th nearest neighbour in its own set) approximates
the support of its distribution:

- precision: share of generated samples inside the real manifold (fidelity);
- recall: share of real samples inside the generated manifold (diversity);
- density: how many real balls contain a generated sample, on average, divided by k (~1 when the
  distributions match; rewards samples in dense real regions and is robust to real outliers);
- coverage: share of real samples whose ball contains at least one generated sample.

One pass over the real x generated distance matrix, in chunks, gives all four.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from atelier.metrics.knn import CHUNK, chunked_sq_dists, kth_neighbour_sq_dist


@dataclass
class ManifoldMetrics:
    precision: float
    recall: float
    density: float
    coverage: float
    k: int  # neighbours for precision/recall
    k_density: int  # neighbours for density/coverage

    def to_dict(self) -> dict:
        return asdict(self)


def manifold_metrics(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3, k_density: int = 5,
                     real_radii: dict[int, torch.Tensor] | None = None, chunk: int = CHUNK) -> ManifoldMetrics:
    """Precision, recall (k-NN radii, default k=3) and density, coverage (k_density, default 5) of
    (M, D) generated features against (N, D) real ones. ``real_radii`` may hold precomputed real
    k-NN squared radii ({k: (N,)}) from a cached reference."""
    real, fake = real.float(), fake.float()
    if real_radii is None or k not in real_radii or k_density not in real_radii:
        real_radii = kth_neighbour_sq_dist(real, (k, k_density), chunk)
    r_k, r_dc = real_radii[k], real_radii[k_density]
    f_k = kth_neighbour_sq_dist(fake, (k,), chunk)[k]
    fake_in_real = torch.zeros(fake.shape[0], dtype=torch.bool)
    density_count = torch.zeros(fake.shape[0])
    real_in_fake = torch.zeros(real.shape[0], dtype=torch.bool)
    covered = torch.zeros(real.shape[0], dtype=torch.bool)
    for start, d in chunked_sq_dists(real, fake, chunk):  # d: (chunk of real, M)
        rows = slice(start, start + d.shape[0])
        fake_in_real |= (d <= r_k[rows, None]).any(0)
        inside_dc = d <= r_dc[rows, None]
        density_count += inside_dc.sum(0)
        covered[rows] = inside_dc.any(1)
        real_in_fake[rows] = (d <= f_k[None, :]).any(1)
    return ManifoldMetrics(
        precision=float(fake_in_real.float().mean()),
        recall=float(real_in_fake.float().mean()),
        density=float(density_count.sum() / (k_density * fake.shape[0])),
        coverage=float(covered.float().mean()),
        k=k,
        k_density=k_density,
    )
