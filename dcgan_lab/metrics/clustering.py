"""The clustering study: do G's samples fall into k distinct, balanced groups (as the 10 digits do)?

Generate N images, optionally reduce with PCA, cluster with KMeans, then report
- silhouette: mean over samples of (b - a) / max(a, b) (a = mean distance within its cluster,
  b = to the nearest other cluster); in [-1, 1], higher = better separated;
- compactness: mean squared distance to the own centroid per dimension (mean intra-cluster variance);
- balance: entropy of the cluster sizes / log k; 1 = equal sizes, 0 = one cluster holds everything.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dcgan_lab.plots import headless_pyplot

log = logging.getLogger(__name__)


@dataclass
class ClusterResult:
    labels: np.ndarray        # (N,) cluster of each sample
    reduced: np.ndarray       # (N, d) the space KMeans ran in (after PCA when used)
    centroid_distance: np.ndarray  # (N,) distance of each sample to its centroid
    silhouette_values: np.ndarray  # (N,)
    silhouette: float
    compactness: float
    balance: float

    def scalars(self) -> dict[str, float]:
        return {"silhouette": self.silhouette, "compactness": self.compactness, "balance": self.balance}


def cluster_study(features: torch.Tensor | np.ndarray, k: int = 10, pca_components: int | None = 50,
                  seed: int = 0) -> ClusterResult:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_samples

    x = np.asarray(features.detach().cpu().numpy() if torch.is_tensor(features) else features, dtype=np.float64)
    x = x.reshape(len(x), -1)  # (N, C, H, W) -> (N, C*H*W)
    if len(x) <= k:
        raise ValueError(f"clustering into k={k} needs more than {k} samples, got {len(x)}")
    if pca_components and pca_components < x.shape[1]:
        # covariance_eigh: one D x D eigendecomposition, much faster than randomized SVD when N >> D
        solver = "covariance_eigh" if x.shape[1] <= 2048 else "auto"
        x = PCA(n_components=min(pca_components, len(x)), svd_solver=solver, random_state=seed).fit_transform(x)
    points = len(np.unique(x, axis=0))
    with warnings.catch_warnings():
        if points < k:
            # KMeans can only find as many clusters as there are points: say so in the lab's words, not
            # sklearn's ConvergenceWarning about "duplicate points in X" in the middle of the training output.
            log.info("cluster study: the %d samples are only %d distinct point(s), fewer than k=%d: "
                     "the generator has collapsed (balance and silhouette near 0)", len(x), points, k)
            warnings.filterwarnings("ignore", message="Number of distinct clusters")
        kmeans = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)  # k-means++ init: one run suffices here
    labels = kmeans.labels_
    sq_dist = ((x - kmeans.cluster_centers_[labels]) ** 2).sum(axis=1)
    sizes = np.bincount(labels, minlength=k) / len(labels)
    nonzero = sizes[sizes > 0]
    distinct = len(np.unique(labels))
    silhouette_values = silhouette_samples(x, labels) if distinct > 1 else np.zeros(len(x))
    return ClusterResult(
        labels=labels,
        reduced=x,
        centroid_distance=np.sqrt(sq_dist),
        silhouette_values=silhouette_values,
        silhouette=float(silhouette_values.mean()),
        compactness=float(sq_dist.mean() / x.shape[1]),
        balance=float(-(nonzero * np.log(nonzero)).sum() / math.log(k)) + 0.0,  # + 0.0: one cluster is 0.0, not -0.0
    )


# ---- figures ------------------------------------------------------------------------------------
def save_pca_scatter(result: ClusterResult, path: Path, title: str) -> Path:
    from sklearn.decomposition import PCA

    plt = headless_pyplot()
    xy = PCA(n_components=2, svd_solver="covariance_eigh").fit_transform(result.reduced)  # (N, d) -> (N, 2)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    scatter = ax.scatter(xy[:, 0], xy[:, 1], c=result.labels, cmap="tab10", s=6, alpha=0.7)
    ax.legend(*scatter.legend_elements(), title="cluster", fontsize=7, loc="best", markerscale=0.8)
    ax.set(title=title, xlabel="PC 1", ylabel="PC 2")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def save_silhouette_plot(result: ClusterResult, path: Path, title: str) -> Path:
    plt = headless_pyplot()
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(5.5, 5))
    y = 0
    for c in np.unique(result.labels):
        values = np.sort(result.silhouette_values[result.labels == c])
        ax.fill_betweenx(np.arange(y, y + len(values)), 0, values, color=cmap(c % 10), alpha=0.8)
        ax.text(-0.08, y + len(values) / 2, str(c), fontsize=7, va="center")
        y += len(values) + 10
    ax.axvline(result.silhouette, color="red", linestyle="--", label=f"mean {result.silhouette:.3f}")
    ax.set(title=title, xlabel="silhouette value", ylabel="samples by cluster", yticks=[])
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def save_cluster_grid(result: ClusterResult, images: torch.Tensor, path: Path, per_cluster: int = 10) -> Path:
    """One row per cluster: its samples closest to the centroid (images in [-1, 1])."""
    from torchvision.utils import save_image

    rows = []
    blank = torch.full_like(images[0], -1.0)
    for c in range(result.labels.max() + 1):
        members = np.flatnonzero(result.labels == c)
        members = members[np.argsort(result.centroid_distance[members])][:per_cluster]
        row = [images[i] for i in members] + [blank] * (per_cluster - len(members))
        rows.extend(row)
    grid = torch.stack(rows)  # (k * per_cluster, C, H, W)
    save_image(grid, path, nrow=per_cluster, normalize=True, value_range=(-1, 1), padding=2)
    return path
