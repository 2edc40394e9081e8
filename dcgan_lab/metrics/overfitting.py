"""Is D memorising its training images? Karras et al. (2020, ADA, figure 1) watch D's outputs on the training
images and on validation images drift apart as D overfits; G's samples degrade soon after. One number for it:

    d_overfit/auc = P(D(x_train) > D(x_held_out)), over pairs of a training and a held-out real image
                  = Mann-Whitney U / (n_train * n_held_out), ties counted half
0.5: D scores the images it trained on like new ones; 1: it tells them apart perfectly, i.e. it has learned the
training set rather than the data. Below 0.5 is chance as well (D does not favour held-out images), so a report
ranks d_overfit/auc_excess = max(AUC - 0.5, 0), not the AUC. Ranks, not raw outputs, so the number compares across
losses (BCE, hinge and WGAN outputs live on different scales). Held-out images are the dataset's test split, which the run never saw.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata

from dcgan_lab.plots import headless_pyplot


def membership_auc(train_scores: torch.Tensor, held_out_scores: torch.Tensor) -> float:
    """P(a training image's score > a held-out image's), ties counted half."""
    n_train, n_held = len(train_scores), len(held_out_scores)
    ranks = rankdata(np.concatenate([train_scores.double().numpy(), held_out_scores.double().numpy()]))
    return float((ranks[:n_train].sum() - n_train * (n_train + 1) / 2) / (n_train * n_held))


def save_score_histogram(train_scores: torch.Tensor, held_out_scores: torch.Tensor, auc: float, path: Path,
                         title: str) -> Path:
    """D's outputs on training and on held-out real images, overlaid (ADA's figure 1b)."""
    plt = headless_pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    scores = torch.cat([train_scores, held_out_scores]).numpy()
    bins = np.linspace(scores.min(), scores.max(), 40)
    ax.hist(train_scores.numpy(), bins=bins, alpha=0.6, label=f"training images ({len(train_scores)})")
    ax.hist(held_out_scores.numpy(), bins=bins, alpha=0.6, label=f"held-out images ({len(held_out_scores)})")
    ax.set(title=f"{title} D outputs, AUC {auc:.3f}".strip(), xlabel="D(x) (logit)", ylabel="images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
