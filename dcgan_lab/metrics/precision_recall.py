"""k-NN manifolds in feature space: improved precision and recall (Kynkäänniemi et al. 2019), density and
coverage (Naeem et al. 2020).

A manifold is the union of balls around each sample, radius = distance to its k-th nearest neighbour.
precision = share of generated samples inside the real manifold (quality);
recall = share of real samples inside the generated manifold (diversity).
One real outlier has a large ball, and every fake that lands in it counts as "inside": precision and recall
overrate generators near outliers. Density and coverage use only the real balls, counted per ball:
density = how many real balls hold a fake, on average, / k (about 1 for fakes drawn like the reals);
coverage = share of real balls holding at least one fake (about 1 - 2^-k for fakes drawn like the reals).
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


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5, chunk: int = 2048) -> dict[str, float]:
    """Naeem et al. (2020), with r_i the distance from real X_i to its k-th nearest other real sample:
        density  = 1 / (k M) * sum_j sum_i [ |Y_j - X_i| <= r_i ]     (M fakes Y_j; may exceed 1)
        coverage = 1 / N * sum_i [ min_j |Y_j - X_i| <= r_i ]          (N reals X_i)
    Closed balls (<=), as in precision and recall here: a fake that copies a real image exactly lies on the rim of
    the balls whose k-th neighbour that image is, and counts as inside them (the authors' prdc, open balls, would not).
    """
    real, fake = real.double(), fake.double()
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"density/coverage needs more than k={k} samples per set, got {len(real)} real, {len(fake)} fake")
    radii = _knn_radii(real, k)
    balls_holding = torch.zeros((), dtype=torch.long, device=real.device)
    nearest_fake = torch.full_like(radii, float("inf"))  # per real sample: its distance to the nearest fake
    for start in range(0, len(fake), chunk):
        d = torch.cdist(fake[start : start + chunk], real)  # (chunk, N)
        balls_holding += (d <= radii[None, :]).sum()
        nearest_fake = torch.minimum(nearest_fake, d.min(dim=0).values)
    density = balls_holding.item() / (k * len(fake))
    coverage = (nearest_fake <= radii).double().mean().item()
    return {"density": density, "coverage": coverage}


def manifold_metrics(real: torch.Tensor, fake: torch.Tensor, pr_k: int = 3, dc_k: int = 5, seed: int = 0) -> dict[str, float]:
    """precision, recall (k = pr_k), density and coverage (k = dc_k) of `fake` against as many `real` features, drawn
    at random (fixed by `seed`): a reference in dataset order may be sorted by class, and its first rows would put
    only the first classes on the real side."""
    pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[: len(fake)]
    real = real[pick.to(real.device)]
    return {**precision_recall(real, fake, pr_k), **density_coverage(real, fake, dc_k)}
