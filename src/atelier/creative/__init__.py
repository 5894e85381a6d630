"""Exploring what a model learned: sampling, interpolation, traversals, arithmetic, novelty."""

from atelier.creative.sampling import SampleSet, sample_images, save_samples

__all__ = ["SampleSet", "sample_images", "save_samples"]
