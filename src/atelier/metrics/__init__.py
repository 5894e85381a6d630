"""Evaluation: feature extractors and distribution metrics."""

from atelier.metrics.frechet import FeatureStats, feature_stats, frechet_distance

__all__ = ["FeatureStats", "feature_stats", "frechet_distance"]
