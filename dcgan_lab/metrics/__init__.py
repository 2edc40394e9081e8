"""Metrics: Fréchet distance, Inception FID/IS/KID (torch-fidelity), the lab's classifier metrics,
mode coverage, the clustering study, precision/recall and density/coverage, with cached reference statistics.

The names below load on first use: `dcgan_lab.metrics.registry` (the config checks read it) must not pull in
torch and Lightning, so a bad value on the command line is refused in a second or two.
"""
from __future__ import annotations

import importlib

_HOMES = {
    "ReferenceCache": "cache", "md5_of": "cache",
    "frechet_distance": "frechet", "frechet_distance_from_features": "frechet", "gaussian_stats": "frechet",
    "mode_metrics": "modes",
    "density_coverage": "precision_recall", "precision_recall": "precision_recall",
    "MetricReport": "suite", "MetricSuite": "suite", "sample_images": "suite", "settings_from": "suite",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
