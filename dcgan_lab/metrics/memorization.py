"""Does G copy its training images? Nearest-neighbour distances in pixel space, against real data's own.

R is a set of training images, H other training images held out of R (real images R does not contain):
    d(x)     = min over r in R of ||x - r||_2, on images in [-1, 1]
    nn_ratio = median over generated g of d(g) / median over held-out h of d(h)
    copies   = share of generated g with d(g) < q, q = the `copy_quantile` (1%) quantile of d(h)
A new real image is nearer to R than q one time in a hundred. A G that draws new images of the data's kind
gives nn_ratio near 1 and copies near 1%; one that memorised its training set gives copies far above 1% and
nn_ratio below 1 (a copy sits on its original: d = 0). nn_ratio far above 1 means samples far from every training
image: poor ones, rarely novel ones.

The same comparison as a test, cell by cell (Meehan et al. 2020, "A non-parametric test to detect data-copying",
their C_T): split the data space into k cells (k-means on R after PCA), and in each cell j that holds enough of
both kinds compare the d(g) of its generated images with the d(h) of its held-out ones by Mann-Whitney U:
    Z_j = (U_j - m_j n_j / 2) / sqrt(m_j n_j (m_j + n_j + 1) / 12),  U_j = #{(g, h) in j: d(g) > d(h)} (ties: 1/2)
    ct  = sum_j pi_j Z_j / sum_j pi_j,  pi_j = the share of held-out images in cell j
ct near 0: samples lie as far from the training images as new real images do; ct far below 0 (-3 and less):
data copying, closer than new data would be; far above 0: samples far from the data. Cells keep a G that copies
in some regions from hiding behind one that is poor in others: a global median would average them.

Pixel space on purpose: a copy is pixel-close, while feature spaces also bring close what only looks alike
(and in pixels, thin shapes such as MNIST's ones lie nearest to everything: the figure shows them first).
Images above 64x64 are compared area-averaged to 64x64: a copy stays a copy, and a 256x256 dataset costs what a
64x64 one does (16x fewer numbers per distance; minutes per evaluation on a CPU otherwise).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dcgan_lab.data.datamodule import to_float

COMPARE_SIZE = 64  # the largest side distances are measured at
CELL_FIT_IMAGES = 4000  # reference images the cells are fitted on (a seeded draw): the cells, not the distances
CELL_PCA = 50  # PCA components the cells are drawn in
MIN_PER_CELL = 20  # generated and held-out images a cell needs for its own test


def vectors(images: torch.Tensor, device=None) -> torch.Tensor:
    """uint8 or [-1, 1] images (N, C, H, W) -> float rows (N, C * S * S) on `device`, S = min(H, COMPARE_SIZE)."""
    images = to_float(images.to(device)).float()
    if images.shape[-1] > COMPARE_SIZE:
        images = F.adaptive_avg_pool2d(images, COMPARE_SIZE)
    return images.flatten(1)


def nearest(queries: torch.Tensor, support, k: int = 1, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices) of each query image's k nearest images in `support` (uint8 or [-1, 1]; a tensor, or a
    sequence whose slices are such tensors, e.g. suite.ImageSubset), nearest first: (N, k) each, measured on
    `vectors`. The support becomes floats a chunk at a time, on the queries' device, so a large uint8 reference
    (10,000 CelebA images are 0.5 GB as floats) never sits in memory as floats whole."""
    queries = vectors(queries)
    best_distance = best_index = None
    for start in range(0, len(support), chunk):
        block = vectors(support[start : start + chunk], queries.device)
        distance = torch.cdist(queries, block)  # (N, chunk)
        if best_distance is not None:  # the k best so far compete with this chunk's
            distance = torch.cat([best_distance, distance], 1)
        index = torch.arange(start, start + len(block), device=queries.device).expand(len(queries), -1)
        if best_index is not None:
            index = torch.cat([best_index, index], 1)
        found = distance.topk(min(k, distance.shape[1]), dim=1, largest=False)
        best_distance, best_index = found.values, index.gather(1, found.indices)
    return best_distance, best_index


def copy_study(fake: torch.Tensor, reference: torch.Tensor, held_out: torch.Tensor, copy_quantile: float = 0.01,
               neighbours: int = 5, cells: dict | None = None) -> dict:
    """Generated images (N, C, H, W) in [-1, 1] against the reference R and the held-out real images H (uint8 or
    [-1, 1]): the scalars (ct with `cells` from `fit_cells`), plus each generated image's nearest reference images
    (for the figure)."""
    fake_distance, fake_neighbours = nearest(fake, reference, k=neighbours)
    real_distance = nearest(held_out.to(fake.device), reference)[0][:, 0]
    threshold = torch.quantile(real_distance.double(), copy_quantile)
    study = {
        "nn_ratio": float(fake_distance[:, 0].median() / real_distance.median()),
        "copies": float((fake_distance[:, 0].double() < threshold).double().mean()),
        "distance": fake_distance[:, 0].cpu(),
        "neighbours": fake_neighbours.cpu(),
    }
    if cells is not None:
        study["ct"] = data_copying_z(fake_distance[:, 0].cpu(), real_distance.cpu(), assign_cells(fake, cells),
                                     assign_cells(held_out, cells))
    return study


def fit_cells(reference: torch.Tensor, k: int, seed: int = 0) -> dict:
    """k cells of the data space: k-means on `CELL_PCA` PCA components of (a seeded draw of up to
    `CELL_FIT_IMAGES`) reference images' `vectors`. {"mean", "components", "centroids"}: numpy float32."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    picked = torch.randperm(len(reference), generator=torch.Generator().manual_seed(seed))[:CELL_FIT_IMAGES]
    x = vectors(reference[picked.sort().values]).numpy()
    pca = PCA(n_components=min(CELL_PCA, *x.shape), svd_solver="randomized", random_state=seed).fit(x)
    kmeans = KMeans(n_clusters=min(k, len(x)), n_init=3, random_state=seed).fit(pca.transform(x))
    return {"mean": pca.mean_.astype("float32"), "components": pca.components_.astype("float32"),
            "centroids": kmeans.cluster_centers_.astype("float32")}


def assign_cells(images: torch.Tensor, cells: dict, chunk: int = 2048) -> torch.Tensor:
    """The cell (nearest k-means centre in the cells' PCA space) of each image, (N,) int64 on the CPU."""
    mean, components, centroids = (torch.as_tensor(cells[name]) for name in ("mean", "components", "centroids"))
    found = []
    for start in range(0, len(images), chunk):
        x = vectors(images[start : start + chunk], "cpu")
        found.append(torch.cdist((x - mean) @ components.T, centroids).argmin(1))
    return torch.cat(found)


def data_copying_z(fake_distance: torch.Tensor, real_distance: torch.Tensor, fake_cell: torch.Tensor,
                   real_cell: torch.Tensor, min_per_cell: int = MIN_PER_CELL) -> float:
    """Meehan et al.'s C_T (module docstring): the held-out-weighted mean of the cells' Mann-Whitney Z scores of
    generated against held-out nearest-training-image distances. Cells with fewer than `min_per_cell` of either
    kind are left out; when none has enough, all images form one cell."""
    from dcgan_lab.metrics.overfitting import membership_auc

    def z_score(fake: torch.Tensor, real: torch.Tensor) -> float:
        n, m = len(fake), len(real)
        u = membership_auc(fake, real) * n * m  # pairs with d(g) > d(h), ties half
        return (u - n * m / 2) / math.sqrt(n * m * (n + m + 1) / 12)

    k = int(max(fake_cell.max(), real_cell.max())) + 1
    fake_count, real_count = fake_cell.bincount(minlength=k), real_cell.bincount(minlength=k)
    cells = ((fake_count >= min_per_cell) & (real_count >= min_per_cell)).nonzero().flatten().tolist()
    if not cells:
        return z_score(fake_distance, real_distance)
    weights = real_count[cells].double()
    scores = torch.tensor([z_score(fake_distance[fake_cell == j], real_distance[real_cell == j]) for j in cells])
    return float((weights * scores).sum() / weights.sum())


def save_neighbour_grid(fake: torch.Tensor, reference: torch.Tensor, study: dict, path, rows: int = 8):
    """One row per generated image nearest to the training set (where copies would be): the image, then its
    nearest training images, nearest first."""
    from torchvision.utils import save_image

    closest = study["distance"].argsort()[:rows]
    tiles = [tile.float().cpu() for i in closest for tile in (fake[i], *to_float(reference[study["neighbours"][i]]))]
    save_image(torch.stack(tiles), path, nrow=1 + study["neighbours"].shape[1], normalize=True, value_range=(-1, 1),
               padding=2)
    return path
