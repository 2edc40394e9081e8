"""Improved precision and recall (Kynkäänniemi et al. 2019): k-NN manifolds in feature space.

precision = share of generated samples inside the real manifold (quality);
recall = share of real samples inside the generated manifold (coverage).
A manifold is the union of balls around each sample, radius = distance to its k-th nearest neighbour.
"""
from __future__ import annotations

import torch


def _knn_radii(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    radii = []
    for start in range(0, len(x), chunk):
        d = torch.cdist(x[start : start + chunk], x)  # (chunk, N)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # k+1: the nearest is the sample itself
    return torch.cat(radii)


def _inside(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    hits = []
    for start in range(0, len(queries), chunk):
        d = torch.cdist(queries[start : start + chunk], support)  # (chunk, M)
        hits.append((d <= radii[None, :]).any(dim=1))
    return torch.cat(hits)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict[str, float]:
    real, fake = real.double(), fake.double()
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall needs more than k={k} samples per set, got {len(real)} real, {len(fake)} fake")
    precision = _inside(fake, real, _knn_radii(real, k)).double().mean().item()
    recall = _inside(real, fake, _knn_radii(fake, k)).double().mean().item()
    return {"precision": precision, "recall": recall}
