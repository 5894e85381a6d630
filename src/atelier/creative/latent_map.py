"""2-D maps of a VAE's latent space: posterior means projected by PCA or t-SNE, coloured by class.

PCA is linear and exact (an SVD of the centred means): distances along its axes mean something and
the same model always gives the same map. t-SNE (van der Maaten & Hinton 2008) keeps
neighbourhoods, so clusters show up more clearly, but distances between clusters and cluster sizes
carry little meaning. Its perplexity (an effective number of neighbours) must stay below the number
of points; here it is capped at (N - 1) / 3, so small sets still work.
"""

from __future__ import annotations

from pathlib import Path

import torch

from atelier.creative.latent import as_model_images, require_encoder

METHODS = ("pca", "tsne")


def pca_2d(x: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N, 2) projection on the two leading principal axes (zeros where D < 2 leaves none).
    Axis signs are fixed (largest loading positive), so the map is deterministic."""
    x = x.double() - x.double().mean(0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    axes = vh[:2]  # (k, D), k = min(2, N, D)
    signs = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    coords = x @ (axes * torch.where(signs == 0, 1.0, signs)).T
    if coords.shape[1] < 2:
        coords = torch.cat([coords, torch.zeros(coords.shape[0], 2 - coords.shape[1], dtype=coords.dtype)], 1)
    return coords.float()


#: The most points a t-SNE map takes (scikit-learn's Barnes-Hut t-SNE: minutes on a CPU at this size).
MAX_TSNE_POINTS = 10_000


def tsne_2d(x: torch.Tensor, *, perplexity: float = 30.0, seed: int = 0) -> torch.Tensor:
    """(N, D) -> (N, 2) t-SNE embedding (scikit-learn, PCA initialisation), perplexity capped for small N;
    4 <= N <= :data:`MAX_TSNE_POINTS`."""
    from sklearn.manifold import TSNE

    n = x.shape[0]
    if not 4 <= n <= MAX_TSNE_POINTS:
        raise ValueError(f"t-SNE needs from 4 to {MAX_TSNE_POINTS:,} points, got {n:,} (PCA takes any number)")
    perplexity = float(min(perplexity, max(1.0, (n - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return torch.from_numpy(tsne.fit_transform(x.double().numpy())).float()


def plot_latent_map(coords: torch.Tensor, path: str | Path, *, labels: torch.Tensor | None = None,
                    class_names: list[str] | None = None, title: str = "latent map") -> Path:
    """Scatter plot of (N, 2) coordinates as PNG, one colour per class with a legend; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from atelier.report.plots import save_figure

    coords = coords.detach().cpu().numpy()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    size = 12 if coords.shape[0] <= 2000 else 5
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=size, alpha=0.7, color="tab:blue", linewidths=0)
    else:
        labels = torch.as_tensor(labels).long().cpu()
        classes = sorted(set(labels.tolist()))
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, c in enumerate(classes):
            pick = (labels == c).numpy()
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            ax.scatter(coords[pick, 0], coords[pick, 1], s=size, alpha=0.75, color=cmap(i % cmap.N),
                       label=name, linewidths=0)
        ax.legend(title="class", loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=2, frameon=False)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path)


@torch.no_grad()
def latent_map(vae, images: torch.Tensor, labels: torch.Tensor | None = None, *, method: str = "pca",
               path: str | Path | None = None, class_names: list[str] | None = None, perplexity: float = 30.0,
               seed: int = 0, color_labels: torch.Tensor | None = None) -> torch.Tensor:
    """2-D coordinates (N, 2) of the posterior means of ``images`` (uint8 or [-1, 1]).

    ``labels`` are needed to encode with a conditional VAE, and colour the points (``color_labels``
    colours an unconditional model's map by class instead). ``path``: also write the scatter PNG.
    """
    require_encoder(vae, "a latent map")
    if method not in METHODS:
        raise ValueError(f"unknown latent map method {method!r}; use one of {', '.join(METHODS)}")
    images = as_model_images(vae, images)
    if images.shape[0] < 2:
        raise ValueError(f"a latent map needs at least 2 images, got {images.shape[0]}")
    if vae.conditional and labels is None:
        raise ValueError("this VAE is class-conditional: pass the images' labels")
    mean, _ = vae.encode_images(images, labels if vae.conditional else None)
    coords = pca_2d(mean) if method == "pca" else tsne_2d(mean, perplexity=perplexity, seed=seed)
    if path is not None:
        colours = color_labels if color_labels is not None else labels
        what = "PCA" if method == "pca" else "t-SNE"
        plot_latent_map(coords, path, labels=colours, class_names=class_names,
                        title=f"{what} of {images.shape[0]} posterior means ({vae.config.latent_dim}-d latent)")
    return coords
