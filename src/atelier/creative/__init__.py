"""Exploring what a model learned: sampling, interpolation, traversals, arithmetic, novelty."""

from atelier.creative.sampling import save_samples, write_samples
from atelier.models.sampling import SampleSet, iter_samples, sample_images

__all__ = ["SampleSet", "iter_samples", "sample_images", "save_samples", "write_samples"]

# Latent-space exploration (interpolation, traversal, arithmetic, maps, novelty).
from atelier.creative.arithmetic import image_arithmetic, latent_arithmetic, seed_arithmetic  # noqa: E402
from atelier.creative.interpolate import interpolate_classes, interpolate_images, interpolate_seeds  # noqa: E402
from atelier.creative.latent import lerp, seed_latents, slerp  # noqa: E402
from atelier.creative.latent_map import latent_map  # noqa: E402
from atelier.creative.novelty import nearest_neighbour_pairs  # noqa: E402
from atelier.creative.reconstruct import reconstruction_grid  # noqa: E402
from atelier.creative.traverse import kl_per_dimension, traverse  # noqa: E402

__all__ += [
    "image_arithmetic", "interpolate_classes", "interpolate_images", "interpolate_seeds", "kl_per_dimension",
    "latent_arithmetic", "latent_map", "lerp", "nearest_neighbour_pairs", "reconstruction_grid", "seed_arithmetic",
    "seed_latents", "slerp", "traverse",
]
