"""Inception feature speed: torch-fidelity's extractor as the lab ran it before vs the lab's path now.

before: FeatureExtractorInceptionV3 as built by torch-fidelity (NCHW fp32, BatchNorm separate), under no_grad,
        fed the metric batch (metrics.batch_size=250, capped at n_images) per forward;
after:  dcgan_lab.metrics.inception.Inception: BatchNorm folded into the convs, channels_last fp32,
        inference_mode, CPU_BATCH images per forward on CPU.
Same images (real digits, 28 -> 32 px, as the metric suite feeds them), same weights; the speed-up may not
move features by more than fp32 round-off (~1e-5; bf16 would move them ~1.5%, so it is not used).

    python benchmarks/inception_bench.py                 # CPU, 64 images, the lab's weights (fetched once)
    python benchmarks/inception_bench.py --device cuda --n 1000
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dcgan_lab.metrics.inception import Inception, to_uint8_rgb  # noqa: E402
from dcgan_lab.metrics.inception_weights import InceptionWeights, resolve_weights  # noqa: E402

OLD_METRIC_BATCH = 250  # metrics.batch_size: what the lab fed torch-fidelity per forward before
FLOAT64_IMAGES = 8      # images also run through the float64 network: how far each fp32 path is from exact


def digits(n: int) -> torch.Tensor:
    """n real MNIST digits as the suite hands them to Inception: uint8 (n, 3, 32, 32)."""
    from dcgan_lab.data.datamodule import fit_to_size
    from dcgan_lab.data.sources import mnist_mini

    images, _ = mnist_mini()
    return to_uint8_rgb(fit_to_size(images[:n].repeat(-(-n // len(images)), 1, 1, 1)[:n], 32))


def _timed(extract, images: torch.Tensor, batch: int, device: torch.device) -> tuple[float, torch.Tensor]:
    extract(images[:2])  # warm-up: oneDNN/cuDNN pick and build their kernels on the first call
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    features = torch.cat([extract(chunk) for chunk in images.split(batch)])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - started), features


def inception_speed(device: str = "cpu", n_images: int = 64, weights: InceptionWeights | None = None,
                    cache_dir: str | Path = ROOT / ".cache", batch_size: int | None = None) -> dict:
    """{before_img_s, after_img_s, speedup, max_abs_feature_diff, ...} for n_images digits on `device`;
    batch_size overrides the lab's images per forward (CPU_BATCH on CPU) for the `after` path."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    device = torch.device(device)
    weights = weights or resolve_weights(None, cache_dir)
    images = digits(n_images)

    plain = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights.path)).to(device)

    @torch.no_grad()
    def before(chunk):
        return plain(chunk.to(device))[0].cpu()

    before_rate, before_features = _timed(before, images, min(OLD_METRIC_BATCH, n_images), device)
    # Context for the difference: how far each fp32 path is from the same network run in float64 (the timed
    # extractor, converted in place: its weights are not read from disk twice).
    exact = plain.double()
    exact.feature_extractor_internal_dtype = torch.float64
    few = images[:FLOAT64_IMAGES]
    with torch.no_grad():
        truth = exact(few.to(device))[0].double().cpu()
    del plain, exact
    fast = Inception(weights, device)
    fast.batch_size = batch_size or fast.batch_size
    after_rate, after_features = _timed(lambda chunk: fast(chunk)["2048"], images, fast.batch_size, device)
    return {
        "device": str(device), "threads": torch.get_num_threads(), "n_images": n_images,
        "before": f"torch-fidelity extractor, NCHW fp32, no_grad, batch {min(OLD_METRIC_BATCH, n_images)}",
        "after": f"BN folded, channels_last fp32, inference_mode, batch {fast.batch_size}",
        "before_img_s": round(before_rate, 2), "after_img_s": round(after_rate, 2),
        "speedup": round(after_rate / before_rate, 2),
        "max_abs_feature_diff": float((after_features - before_features).abs().max()),
        "max_abs_feature": float(before_features.abs().max()),
        "float64_images": len(few),
        "before_vs_float64": float((before_features[:len(few)].double() - truth).abs().max()),
        "after_vs_float64": float((after_features[:len(few)].double() - truth).abs().max()),
        "weights_md5": weights.md5,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=64, help="images per measurement")
    parser.add_argument("--cache-dir", default=str(ROOT / ".cache"))
    parser.add_argument("--weights", default=None, help="a torch-fidelity Inception state dict (default: the lab's)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per forward, lab path (default: the lab's)")
    args = parser.parse_args(argv)
    from dcgan_lab.metrics.inception_weights import user_weights

    weights = user_weights(args.weights) if args.weights else None
    result = inception_speed(args.device, args.n, weights, args.cache_dir, args.batch_size)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
