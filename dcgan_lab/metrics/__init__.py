"""Metrics: Fréchet distance, Inception FID/IS/KID (torch-fidelity), the lab's classifier metrics,
mode coverage, the clustering study, precision/recall and density/coverage, with cached reference statistics.

The suite's names load on first use: it brings in the datamodule and so Lightning, which the config checks (they
read `dcgan_lab.metrics.registry`) must not wait for, so a bad value on the command line is refused in seconds.
"""
from __future__ import annotations

import importlib

from dcgan_lab.metrics.cache import ReferenceCache, md5_of
from dcgan_lab.metrics.frechet import frechet_distance, frechet_distance_from_features, gaussian_stats
from dcgan_lab.metrics.modes import mode_metrics
from dcgan_lab.metrics.precision_recall import density_coverage, precision_recall

_FROM_SUITE = ("MetricReport", "MetricSuite", "sample_images", "settings_from")

__all__ = [
    "MetricReport", "MetricSuite", "ReferenceCache", "density_coverage", "frechet_distance", "frechet_distance_from_features",
    "gaussian_stats", "md5_of", "mode_metrics", "precision_recall", "sample_images", "settings_from",
]


def __getattr__(name: str):
    if name not in _FROM_SUITE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.suite"), name)
