"""Evaluation: feature extractors (hashed), distribution metrics, memorisation, reconstruction, ratings.

    >>> from atelier.metrics import EvalConfig, Evaluator
    >>> ev = Evaluator(EvalConfig(data="mnist"), resolution=28)
    >>> ev.evaluate(images).metrics      # fid, kid_mean, is, precision, recall, c2st_accuracy, ...

One module per concept: ``extractors`` (+ ``classifier``, ``inception``), ``reference`` (cached real
statistics), ``frechet``, ``kid``, ``inception_score``, ``manifold`` (precision/recall,
density/coverage), ``c2st``, ``memorisation``, ``membership`` (the membership-inference audit),
``reconstruction``, ``ratings``; ``evaluate`` ties them together and ``sources`` reads what is to be
evaluated.
"""

from atelier.metrics.c2st import TwoSampleResult, classifier_two_sample_test
from atelier.metrics.evaluate import METRIC_GROUPS, METRIC_KEYS, EvalConfig, EvalResult, Evaluator, evaluate_images
from atelier.metrics.extractors import FeatureExtractor, default_extractor, list_extractors, load_extractor
from atelier.metrics.frechet import FeatureStats, feature_stats, frechet_distance
from atelier.metrics.inception_score import inception_score
from atelier.metrics.kid import kernel_inception_distance, mmd2_unbiased
from atelier.metrics.manifold import ManifoldMetrics, manifold_metrics
from atelier.metrics.memorisation import NoveltyResult, nearest_training_images, novelty
from atelier.metrics.membership import (AuditReport, MembershipResult, audit_data, load_audit_data,
                                        membership_advantage)
from atelier.metrics.reconstruction import ReconstructionMetrics, reconstruction_metrics
from atelier.metrics.sources import GeneratedSet, load_generated

__all__ = [
    "AuditReport", "EvalConfig", "EvalResult", "Evaluator", "FeatureExtractor", "FeatureStats", "GeneratedSet",
    "METRIC_GROUPS", "METRIC_KEYS", "ManifoldMetrics", "MembershipResult", "NoveltyResult", "ReconstructionMetrics",
    "TwoSampleResult", "audit_data", "classifier_two_sample_test", "default_extractor", "evaluate_images",
    "feature_stats", "frechet_distance", "inception_score", "kernel_inception_distance", "list_extractors",
    "load_audit_data", "load_extractor", "load_generated", "manifold_metrics", "membership_advantage",
    "mmd2_unbiased", "nearest_training_images", "novelty", "reconstruction_metrics",
]
