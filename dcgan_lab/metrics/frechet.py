"""Fréchet distance between two Gaussians fitted to feature sets (the "F" in FID)."""
from __future__ import annotations

import numpy as np
import torch


def gaussian_stats(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> mean (D,) and unbiased covariance (D, D), in float64."""
    x = np.asarray(features.detach().cpu().numpy() if torch.is_tensor(features) else features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    # Symmetric square root through eigh: exact for PSD matrices, and clipping tiny negative
    # eigenvalues (round-off) keeps rank-deficient covariances (N < D) finite.
    values, vectors = np.linalg.eigh((sigma + sigma.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}).

    Tr((S1 S2)^{1/2}) = Tr((A S2 A)^{1/2}) with A = S1^{1/2}: the inner matrix is symmetric PSD,
    so its eigenvalues are real and >= 0 (no complex round-off as with sqrtm on S1 S2).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def frechet_distance_from_features(features1, features2) -> float:
    return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))


def per_class_frechet_distances(features: torch.Tensor, labels: torch.Tensor, real_features: torch.Tensor,
                                real_labels: torch.Tensor) -> dict[int, float]:
    """{class: Fréchet distance between the generated and the real features of that class}, for every class with
    at least 2 of each (intra-FID, Miyato & Koyama 2018: FID within each class of a class-conditional G, so a G
    that draws the wrong class for a label scores badly even when its samples pooled over labels look right)."""
    distances = {}
    for k in sorted(set(labels.tolist()) & set(real_labels.tolist())):
        fake, real = features[labels == k], real_features[real_labels == k]
        if len(fake) >= 2 and len(real) >= 2:
            distances[int(k)] = frechet_distance_from_features(fake, real)
    return distances
