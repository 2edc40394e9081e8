"""FID / IS / KID with torch-fidelity's Inception (the 2015 TF weights every paper's numbers use).

Standard protocol: images as uint8 RGB, resized to 299 inside torch-fidelity with TF1's bilinear
(no antialiasing), 2048-d pool features for FID and KID, unbiased logits for IS.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from dcgan_lab.errors import LabError

log = logging.getLogger(__name__)

FEATURES = ["2048", "logits_unbiased"]
FID_RANK = 2048  # below this many samples the 2048x2048 covariance is rank-deficient


class InceptionUnavailable(LabError):
    """The Inception weights could not be loaded; the message says how to provide them."""


def load_inception(weights_path: str | None = None, device="cpu"):
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

    if weights_path is not None and not Path(weights_path).is_file():
        raise InceptionUnavailable(f"Inception metrics skipped: metrics.inception_weights={weights_path} is not a file; "
                                   f"download {URL_INCEPTION_V3} and point it there")
    try:
        extractor = FeatureExtractorInceptionV3("inception-v3-compat", FEATURES, feature_extractor_weights_path=weights_path)
    except Exception as exc:  # URLError offline, HTTP errors, corrupt or mismatched files: same remedy
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        source = weights_path or "torch-fidelity's download"
        raise InceptionUnavailable(
            f"Inception metrics skipped: no Inception weights from {source} ({type(exc).__name__}: {reason[:120]}); "
            f"download {URL_INCEPTION_V3} and pass metrics.inception_weights=<path>"
        ) from None
    return extractor.to(device)


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 or float [-1, 1] (B, 1|3, H, W) -> uint8 (B, 3, H, W), as torch-fidelity expects."""
    if images.dtype != torch.uint8:
        images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


@torch.no_grad()
def inception_features(extractor, batches: Iterator[torch.Tensor], n: int, desc: str) -> dict[str, torch.Tensor]:
    """Features of n images drawn from `batches`, with a progress bar and a time estimate up front."""
    from tqdm import tqdm

    device = next(extractor.parameters()).device
    pools, logits, done, started = [], [], 0, time.perf_counter()
    with tqdm(total=n, desc=desc, unit="img", leave=False) as bar:
        for batch in batches:
            batch = batch[: n - done]
            pool, logit = extractor(to_uint8_rgb(batch).to(device))
            pools.append(pool.cpu())
            logits.append(logit.cpu())
            done += len(batch)
            bar.update(len(batch))
            if len(pools) == 1 and done < n:
                rate = done / max(time.perf_counter() - started, 1e-6)
                log.info("%s: %d images at ~%.0f img/s, about %.1f min", desc, n, rate, n / rate / 60)
            if done >= n:
                break
    return {"2048": torch.cat(pools), "logits_unbiased": torch.cat(logits)}


def inception_metrics(real: dict[str, torch.Tensor], fake: dict[str, torch.Tensor], real_stats: tuple,
                      isc_splits: int = 10, kid_subsets: int = 100, kid_subset_size: int = 1000,
                      seed: int = 2020) -> dict[str, float]:
    """FID against the cached real statistics, IS of the generated set, KID between both feature sets."""
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    from dcgan_lab.metrics.frechet import frechet_distance, gaussian_stats

    n_fake = len(fake["2048"])
    fid = frechet_distance(*gaussian_stats(fake["2048"]), *real_stats)
    # Few samples: torch-fidelity's defaults (10 splits, subsets of 1000) would fail or be empty.
    splits = max(1, min(isc_splits, n_fake // 2))
    isc = isc_features_to_metric(fake["logits_unbiased"], splits=splits, shuffle=True, rng_seed=seed)
    subset = min(kid_subset_size, n_fake, len(real["2048"]))
    kid = kid_features_to_metric(real["2048"], fake["2048"], kid_subsets=kid_subsets, kid_subset_size=subset,
                                 verbose=False, rng_seed=seed)
    return {
        "fid": fid,
        "is/mean": isc["inception_score_mean"],
        "is/std": isc["inception_score_std"],
        "kid/mean": kid[KEY_METRIC_KID_MEAN],
        "kid/std": kid[KEY_METRIC_KID_STD],
        "kid/subset_size": float(subset),
    }


def protocol_name(n: int) -> str:
    """10000 -> '10k', 1500 -> '1.5k', 500 -> '500': the sample count is part of FID's name."""
    if n >= 1000 and n % 100 == 0:
        return f"{n / 1000:g}k"
    return str(n)


def batches_of(source: Callable[[int, int], torch.Tensor], n: int, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, n, batch_size):
        yield source(start, min(batch_size, n - start))
