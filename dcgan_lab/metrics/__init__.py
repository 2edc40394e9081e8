"""Metrics: Fréchet distance, Inception FID/IS/KID (torch-fidelity), the lab's classifier metrics,
mode coverage, the clustering study, precision/recall and density/coverage, with cached reference statistics."""
from dcgan_lab.metrics.cache import ReferenceCache, md5_of
from dcgan_lab.metrics.frechet import frechet_distance, frechet_distance_from_features, gaussian_stats
from dcgan_lab.metrics.modes import mode_metrics
from dcgan_lab.metrics.precision_recall import density_coverage, precision_recall
from dcgan_lab.metrics.suite import MetricReport, MetricSuite, sample_images, settings_from

__all__ = [
    "MetricReport", "MetricSuite", "ReferenceCache", "density_coverage", "frechet_distance", "frechet_distance_from_features",
    "gaussian_stats", "md5_of", "mode_metrics", "precision_recall", "sample_images", "settings_from",
]
