"""The lab's own small classifier for labelled datasets (MNIST-family, CIFAR-10): no download needed.

Trained on the labelled training split on first use, then cached under `<cache_dir>/classifiers/`
with a json beside the weights: test-split accuracy, data hash, epochs. Its penultimate layer gives the
features for classifier-FID, clustering and precision/recall; its softmax gives the mode metrics.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dcgan_lab.data.datamodule import to_float
from dcgan_lab.atomic import torch_save_atomically, write_text_atomically
from dcgan_lab.metrics.cache import md5_of, tensor_md5

log = logging.getLogger(__name__)

ARCH_VERSION = "smallcnn-v1"  # bump when the architecture or recipe changes: invalidates cached weights


class SmallClassifier(nn.Module):
    """image (B, C, S, S) in [-1, 1] -> features (B, feature_dim) and logits (B, num_classes)."""

    def __init__(self, channels: int, num_classes: int, image_size: int, feature_dim: int = 128):
        super().__init__()
        self.feature_dim, self.num_classes = feature_dim, num_classes

        # Strided convs (no pooling): half the CPU time of conv+pool blocks at the same accuracy here.
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(inplace=True),                      # (B, C, S, S) -> (B, 32, S/2, S/2)
            nn.Conv2d(32, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),        # -> (B, 64, S/4, S/4)
            nn.Conv2d(64, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),        # -> (B, 64, S/8, S/8)
            nn.AdaptiveAvgPool2d(4),                                  # -> (B, 64, 4, 4)
        )
        # (B, 64, 4, 4) -> (B, 1024) -> (B, feature_dim)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(1024, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def classify(model: SmallClassifier, images: torch.Tensor, batch_size: int = 500, device="cpu"):
    """images uint8 or float [-1, 1] (N, C, S, S) -> features (N, feature_dim), probabilities (N, K) on CPU."""
    model.eval()
    feats, probs = [], []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size].to(device))
        f = model.features(x)
        feats.append(f.cpu())
        probs.append(F.softmax(model.head(f), dim=1).cpu())
    return torch.cat(feats), torch.cat(probs)


def _train(model, images, labels, epochs: int, batch_size: int, seed: int, device) -> None:
    order = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = epochs * (len(images) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=max(steps, 1))
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(images), generator=order)
        for start in range(0, len(images) - batch_size + 1, batch_size):
            idx = perm[start : start + batch_size]
            x, y = to_float(images[idx].to(device)), labels[idx].to(device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


def has_labels(datamodule) -> bool:
    if not getattr(datamodule, "num_classes", 0):
        return False
    labels = datamodule.split("train").labels
    return bool(len(labels)) and bool((labels >= 0).all())


def load_or_train_classifier(datamodule, cache_dir: str | Path, epochs: int = 4, batch_size: int = 128,
                             seed: int = 0, device="cpu") -> tuple[SmallClassifier, dict]:
    """The cached classifier for this dataset (trained now if missing) and its record (test accuracy, hashes)."""
    train, test = datamodule.split("train"), datamodule.split("test")
    channels, size, k = train.images.shape[1], train.images.shape[-1], int(datamodule.num_classes)
    data_md5 = md5_of({"train": tensor_md5(train.images), "train_labels": tensor_md5(train.labels),
                       "test": tensor_md5(test.images), "test_labels": tensor_md5(test.labels)})
    key_parts = {"arch": ARCH_VERSION, "dataset": datamodule.name, "image_size": size, "channels": channels,
                 "num_classes": k, "data_md5": data_md5, "epochs": epochs, "batch_size": batch_size, "seed": seed}
    key = md5_of(key_parts)
    weights = Path(cache_dir) / "classifiers" / f"{datamodule.name}-{key}.pt"
    record_path = weights.with_suffix(".json")

    if weights.exists() and record_path.exists():
        with torch.random.fork_rng(devices=[]):  # layer init draws random numbers: keep the GAN run's stream untouched
            model = SmallClassifier(channels, k, size)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return model.to(device).eval(), json.loads(record_path.read_text())

    log.info("training the metrics classifier on %s (%d images, %d epochs; once, then cached)", datamodule.name, len(train), epochs)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # leaves the caller's RNG stream (the GAN run's) untouched
        torch.manual_seed(seed)
        model = SmallClassifier(channels, k, size).to(device)
        _train(model, train.images, train.labels, epochs, batch_size, seed, device)
    _, probs = classify(model, test.images, device=device)
    accuracy = float((probs.argmax(1) == test.labels).float().mean())
    # A labelled image folder has one split: its "test" accuracy is on the images the classifier trained on.
    held_out = len(test) != len(train) or not torch.equal(test.images.cpu(), train.images.cpu())
    measured_on = "test split" if held_out else "training images (it has no test split)"
    record = {**key_parts, "test_accuracy": accuracy, "test_images": len(test), "train_images": len(train),
              "test_is_train": not held_out, "train_time_s": round(time.perf_counter() - started, 1),
              "weights": weights.name}
    torch_save_atomically(model.state_dict(), weights)
    write_text_atomically(json.dumps(record, indent=2), record_path)
    log.info("metrics classifier: accuracy %.4f on %s's %s, trained in %.0f s, cached at %s", accuracy,
             datamodule.name, measured_on, record["train_time_s"], weights)
    if accuracy < 0.9:
        log.warning("metrics classifier reaches only %.1f%% on %s's %s: its metrics are rough", 100 * accuracy,
                    datamodule.name, measured_on)
    return model.eval(), record
