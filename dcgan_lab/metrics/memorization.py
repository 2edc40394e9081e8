"""Does G copy its training images? Nearest-neighbour distances in pixel space, against real data's own.

R is a set of training images, H other training images held out of R (real images R does not contain):
    d(x)     = min over r in R of ||x - r||_2, on images in [-1, 1]
    nn_ratio = median over generated g of d(g) / median over held-out h of d(h)
    copies   = share of generated g with d(g) < q, q = the `copy_quantile` (1%) quantile of d(h)
A new real image is nearer to R than q one time in a hundred. A G that draws new images of the data's kind
gives nn_ratio near 1 and copies near 1%; one that memorised its training set gives copies far above 1% and
nn_ratio below 1 (a copy sits on its original: d = 0). nn_ratio far above 1 means samples far from every training
image: poor ones, rarely novel ones. This is the comparison of Meehan et al. (2020, data copying) without their
cells. Pixel space on purpose: a copy is pixel-close, while feature spaces also bring close what only looks alike
(and in pixels, thin shapes such as MNIST's ones lie nearest to everything: the figure shows them first).
Images above 64x64 are compared area-averaged to 64x64: a copy stays a copy, and a 256x256 dataset costs what a
64x64 one does (16x fewer numbers per distance; minutes per evaluation on a CPU otherwise).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dcgan_lab.data.datamodule import to_float

COMPARE_SIZE = 64  # the largest side distances are measured at


def vectors(images: torch.Tensor, device=None) -> torch.Tensor:
    """uint8 or [-1, 1] images (N, C, H, W) -> float rows (N, C * S * S) on `device`, S = min(H, COMPARE_SIZE)."""
    images = to_float(images.to(device)).float()
    if images.shape[-1] > COMPARE_SIZE:
        images = F.adaptive_avg_pool2d(images, COMPARE_SIZE)
    return images.flatten(1)


def nearest(queries: torch.Tensor, support: torch.Tensor, k: int = 1, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices) of each query image's k nearest images in `support` (uint8 or [-1, 1]), nearest first:
    (N, k) each, measured on `vectors`. The support becomes floats a chunk at a time, on the queries' device, so a
    large uint8 reference (10,000 CelebA images are 0.5 GB as floats) never sits in memory as floats whole."""
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
               neighbours: int = 5) -> dict:
    """Generated images (N, C, H, W) in [-1, 1] against the reference R and the held-out real images H (uint8 or
    [-1, 1]): the two scalars, plus each generated image's nearest reference images (for the figure)."""
    fake_distance, fake_neighbours = nearest(fake, reference, k=neighbours)
    real_distance = nearest(held_out.to(fake.device), reference)[0][:, 0]
    threshold = torch.quantile(real_distance.double(), copy_quantile)
    return {
        "nn_ratio": float(fake_distance[:, 0].median() / real_distance.median()),
        "copies": float((fake_distance[:, 0].double() < threshold).double().mean()),
        "distance": fake_distance[:, 0].cpu(),
        "neighbours": fake_neighbours.cpu(),
    }


def save_neighbour_grid(fake: torch.Tensor, reference: torch.Tensor, study: dict, path, rows: int = 8):
    """One row per generated image nearest to the training set (where copies would be): the image, then its
    nearest training images, nearest first."""
    from torchvision.utils import save_image

    closest = study["distance"].argsort()[:rows]
    tiles = [tile.float().cpu() for i in closest for tile in (fake[i], *to_float(reference[study["neighbours"][i]]))]
    save_image(torch.stack(tiles), path, nrow=1 + study["neighbours"].shape[1], normalize=True, value_range=(-1, 1),
               padding=2)
    return path
