"""Chunked nearest-neighbour search on feature vectors: the building block of precision/recall,
density/coverage and the memorisation check.

Squared Euclidean distances come from one matrix product per chunk (|a|^2 + |b|^2 - 2 a.b), so a
10,000 x 60,000 search never holds more than ``chunk`` rows of the distance matrix in memory. All
comparisons are made on squared distances; only reported distances take the square root.
"""

from __future__ import annotations

from typing import Iterator

import torch

#: Rows of the distance matrix computed at once: 2048 x 60,000 float32 = 0.5 GB at most.
CHUNK = 2048


def sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) -> (N, M) squared Euclidean distances, float32, clamped at 0."""
    a, b = a.float(), b.float()
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :]
    return d.addmm_(a, b.T, alpha=-2.0).clamp_min_(0.0)


def chunked_sq_dists(a: torch.Tensor, b: torch.Tensor, chunk: int = CHUNK) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (start row, (chunk, M) squared distances) over the rows of ``a``."""
    b = b.float()
    for start in range(0, a.shape[0], chunk):
        yield start, sq_dists(a[start : start + chunk], b)


def kth_neighbour_sq_dist(x: torch.Tensor, ks: tuple[int, ...], chunk: int = CHUNK) -> dict[int, torch.Tensor]:
    """For each k in ``ks``: (N,) squared distance of every row of ``x`` to its k-th nearest *other* row.

    The point itself is excluded by taking k + 1 nearest and skipping the first (its own zero).
    """
    kmax = max(ks)
    if x.shape[0] <= kmax:
        raise ValueError(f"need more than k={kmax} samples for k-NN radii, got {x.shape[0]}")
    out = {k: torch.empty(x.shape[0]) for k in ks}
    for start, d in chunked_sq_dists(x, x, chunk):
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = -1.0  # the point itself sorts first whatever the round-off
        nearest = d.topk(kmax + 1, dim=1, largest=False).values  # (chunk, kmax + 1), ascending
        for k in ks:
            out[k][start : start + d.shape[0]] = nearest[:, k]
    return out


def nearest_neighbours(queries: torch.Tensor, keys: torch.Tensor, chunk: int = 1024, *,
                       exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of the nearest row of ``keys`` for every row of ``queries``; (N,), (N,).

    ``exclude`` (N,) names one key per query to skip (leave-one-out when the queries are keys).
    |q|^2 does not change which key is nearest, so it is added after the minimum: one fused
    ``addmm`` pass per chunk (25% faster than the full distance on a 10k x 60k MNIST search)."""
    queries, keys = queries.float(), keys.float()
    key_norms = (keys * keys).sum(1)[None, :]  # (1, M)
    dist = torch.empty(queries.shape[0])
    index = torch.empty(queries.shape[0], dtype=torch.long)
    for start in range(0, queries.shape[0], chunk):
        q = queries[start : start + chunk]
        d = torch.addmm(key_norms, q, keys.T, alpha=-2.0)  # (chunk, M): |k|^2 - 2 q.k
        if exclude is not None:
            d[torch.arange(d.shape[0]), exclude[start : start + d.shape[0]]] = float("inf")
        idx = d.argmin(1)
        # The expanded form loses precision to cancellation (an exact copy comes out at ~1e-4, not 0):
        # recompute the chosen pairs' distances directly, which is cheap (chunk x D).
        dist[start : start + d.shape[0]] = (q - keys[idx]).pow(2).sum(1).sqrt()
        index[start : start + d.shape[0]] = idx
    return dist, index
