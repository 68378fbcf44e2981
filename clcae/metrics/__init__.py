"""Metrics: functions of images, features or labels that return numbers (no training state).

- :mod:`clcae.metrics.frechet`: Fréchet distance between feature sets (FID-style): :func:`feature_statistics`,
  :func:`frechet_distance`, :func:`extract_features`, :func:`frechet_distance_from_images`.

The identity similarity used as a metric is :func:`clcae.losses.identity.identity_similarity`.
"""
from .frechet import extract_features, feature_statistics, frechet_distance, frechet_distance_from_images

__all__ = ["feature_statistics", "frechet_distance", "extract_features", "frechet_distance_from_images"]
