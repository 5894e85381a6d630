"""The evaluation report: ``metrics.json`` plus an HTML page with samples, nearest training
neighbours, the distance histogram and every number with how it was computed."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from atelier.report.grid import save_grid
from atelier.report.html import Figure, write_page
from atelier.report.plots import save_figure
from atelier.io import atomic_write_json

#: What each metric means, for the report's table.
EXPLAIN = {
    "fid": "Fréchet distance of feature Gaussians (lower is better; floor = real vs real)",
    "kid_mean": "kernel (MMD^2) distance, unbiased: ~0 when the distributions match",
    "kid_std": "standard deviation of KID over subsets",
    "is": "Inception-style score with the extractor's classes (higher; max = number of classes)",
    "is_std": "standard deviation of the score over splits",
    "precision": "share of samples on the real manifold (fidelity)",
    "recall": "share of real images on the generated manifold (diversity)",
    "density": "real neighbourhoods per sample / k (~1 when matched; >1 = samples in dense regions)",
    "coverage": "share of real images with a sample in their neighbourhood",
    "c2st_accuracy": "held-out accuracy of a real-vs-generated classifier (0.5 = indistinguishable)",
    "c2st_p_value": "probability of that accuracy if the two sets were one distribution",
    "near_copy_fraction": "share of samples nearer a training image than the threshold (see novelty below)",
    "memorisation_ratio": "near-copy share / share expected of fresh samples (~1 healthy, >>1 copying)",
}


def _closest_pairs(result, k: int = 24) -> torch.Tensor:
    """(2k, C, H, W): each of the k samples nearest to a training image, followed by that image."""
    nov = result.novelty
    idx = nov.closest(min(k, len(nov.distances)))
    pairs = torch.stack([result.images[idx], result.train_images[nov.indices[idx]]], dim=1)  # (k, 2, C, H, W)
    return pairs.flatten(0, 1)


def _histogram(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nov = result.novelty
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(nov.distances.numpy(), bins=60, alpha=0.6, density=True, label="generated")
    if nov.heldout_distances is not None:
        ax.hist(nov.heldout_distances.numpy(), bins=60, alpha=0.6, density=True, label="real (held out)")
    ax.axvline(nov.threshold, color="k", linestyle="--", linewidth=1, label=f"near-copy threshold {nov.threshold:.3f}")
    ax.set_xlabel("RMS pixel distance to the nearest training image (0..1)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def write_evaluation_report(result, out_dir: str | Path, *, title: str = "Atelier evaluation") -> Path:
    """Write ``metrics.json``, ``samples.png``, ``nearest.png``, ``nn_distances.png`` and ``index.html``
    into ``out_dir``; returns the page's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", result.to_json())
    save_grid(result.images[:100], out / "samples.png", nrow=10)
    figures = [Figure("samples.png", "Generated samples", f"the first {min(100, len(result.images))} evaluated")]
    if result.novelty is not None and result.train_images is not None:
        save_grid(_closest_pairs(result), out / "nearest.png", nrow=8)
        _histogram(result, out / "nn_distances.png")
        figures += [
            Figure("nearest.png", "Closest to the training set",
                   "pairs: a sample, then its nearest training image; the samples most like a training image first"),
            Figure("nn_distances.png", "Distance to the nearest training image",
                   "generated samples against held-out real images; left of the line counts as a near-copy"),
        ]
    p = result.provenance
    metric_rows = {k: f"{v:.5g}    ({EXPLAIN.get(k, '')})" for k, v in result.metrics.items() if v is not None}
    provenance_rows = {k: _fmt(v) for k, v in p.items() if k != "config"}
    intro = (f"{p['n_fake']} generated images from {p.get('source') or 'memory'} against {p['n_real']} real images of "
             f"{p['dataset']} ({p['split']} split), features from {p['extractor']}.")
    return write_page(out / "index.html", title=title, intro=intro, figures=figures,
                      tables={"Metrics": metric_rows, "How it was computed": provenance_rows})
