"""Mode-collapse numbers from a classifier's predictions on generated samples (VEEGAN, PacGAN, Stacked MNIST)."""
from __future__ import annotations

import math

import torch


def mode_metrics(probs: torch.Tensor, coverage_threshold: float = 0.1) -> dict:
    """probs (N, K) softmax outputs -> histogram, classes covered, KL(p_gen || uniform), mean confidence.

    A class counts as covered when it gets at least `coverage_threshold` of its uniform share N/K
    (0.1: at least 1% of samples for K = 10), so a few misclassified blobs do not count as a mode.
    """
    n, k = probs.shape
    predicted = probs.argmax(dim=1)
    histogram = torch.bincount(predicted, minlength=k)  # (K,)
    p = histogram.double() / n
    # KL(p || U) = sum_c p_c log(p_c / (1/K)) = log K - H(p); 0 when balanced, log K when one class.
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    covered = int((histogram >= coverage_threshold * n / k).sum())
    return {
        "classes_covered": float(covered),
        "kl_uniform": math.log(k) - entropy,
        "confidence": float(probs.max(dim=1).values.mean()),
        "histogram": histogram.tolist(),
    }
