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


def _knn_radii(x: torch.Tensor, ks: tuple[int, ...], chunk: int = 2048) -> list[torch.Tensor]:
    """Per sample, the distance to its k-th nearest other sample, for each k in `ks`: one pass over the distances."""
    radii: list[list[torch.Tensor]] = [[] for _ in ks]
    for start in range(0, len(x), chunk):
        d = torch.cdist(x[start : start + chunk], x)  # (chunk, N)
        nearest = d.topk(max(ks) + 1, dim=1, largest=False).values  # ascending; column 0 is the sample itself
        for found, k in zip(radii, ks):
            found.append(nearest[:, k])
    return [torch.cat(found) for found in radii]


def _manifold(real: torch.Tensor, fake: torch.Tensor, pr_k: int, dc_k: int, chunk: int = 2048) -> dict[str, float]:
    """All four from one pass over the fake-to-real distances |Y_j - X_i|: precision, density and coverage read a
    chunk by rows (fakes), recall by columns (reals)."""
    real_pr, real_dc = _knn_radii(real, (pr_k, dc_k), chunk)
    (fake_pr,) = _knn_radii(fake, (pr_k,), chunk)
    in_real_manifold = torch.zeros(len(fake), dtype=torch.bool, device=fake.device)
    in_fake_manifold = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    balls_holding = torch.zeros((), dtype=torch.long, device=real.device)
    nearest_fake = torch.full_like(real_dc, float("inf"))  # per real sample: its distance to the nearest fake
    for start in range(0, len(fake), chunk):
        rows = slice(start, start + chunk)
        d = torch.cdist(fake[rows], real)  # (chunk, N)
        in_real_manifold[rows] = (d <= real_pr[None, :]).any(dim=1)
        in_fake_manifold |= (d <= fake_pr[rows, None]).any(dim=0)
        balls_holding += (d <= real_dc[None, :]).sum()
        nearest_fake = torch.minimum(nearest_fake, d.min(dim=0).values)
    return {"precision": in_real_manifold.double().mean().item(), "recall": in_fake_manifold.double().mean().item(),
            "density": balls_holding.item() / (dc_k * len(fake)), "coverage": (nearest_fake <= real_dc).double().mean().item()}


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> dict[str, float]:
    real, fake = real.double(), fake.double()
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall needs more than k={k} samples per set, got {len(real)} real, {len(fake)} fake")
    scalars = _manifold(real, fake, k, k)
    return {"precision": scalars["precision"], "recall": scalars["recall"]}


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict[str, float]:
    """Naeem et al. (2020), with r_i the distance from real X_i to its k-th nearest other real sample:
        density  = 1 / (k M) * sum_j sum_i [ |Y_j - X_i| <= r_i ]     (M fakes Y_j; may exceed 1)
        coverage = 1 / N * sum_i [ min_j |Y_j - X_i| <= r_i ]          (N reals X_i)
    Closed balls (<=), as in precision and recall here: a fake that copies a real image exactly lies on the rim of
    the balls whose k-th neighbour that image is, and counts as inside them (the authors' prdc, open balls, would not).
    """
    real, fake = real.double(), fake.double()
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"density/coverage needs more than k={k} samples per set, got {len(real)} real, {len(fake)} fake")
    scalars = _manifold(real, fake, k, k)
    return {"density": scalars["density"], "coverage": scalars["coverage"]}


def manifold_metrics(real: torch.Tensor, fake: torch.Tensor, pr_k: int = 3, dc_k: int = 5, seed: int = 0) -> dict[str, float]:
    """precision, recall (k = pr_k), density and coverage (k = dc_k) of `fake` against as many `real` features, drawn
    at random (fixed by `seed`): a reference in dataset order may be sorted by class, and its first rows would put
    only the first classes on the real side."""
    pick = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))[: len(fake)]
    real, fake = real[pick.to(real.device)].double(), fake.double()
    if min(len(real), len(fake)) <= max(pr_k, dc_k):
        raise ValueError(f"precision, recall, density and coverage need more than k={max(pr_k, dc_k)} samples per set, "
                         f"got {len(real)} real, {len(fake)} fake")
    return _manifold(real, fake, pr_k, dc_k)
