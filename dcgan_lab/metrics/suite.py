"""MetricSuite: every enabled metric for one generator, shared by the training callback and evaluate.py.

Which metrics run is `metrics.enabled`; what each one is, needs and logs is its entry in metrics/registry.py. The
suite draws the generated images, holds what entries share (the classifier and its reference statistics, features,
Inception) in a MetricContext, and runs each enabled entry whose needs this evaluation meets.
Generated images come from fixed latents (metrics.seed), so evaluations of one run differ only because
the generator changed. Real-data statistics come from the reference cache (computed once per key).
"""
from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from dcgan_lab import CONF_DIR
from dcgan_lab.data.datamodule import to_float, to_uint8
from dcgan_lab.errors import ConfigError
from dcgan_lab.metrics import registry
from dcgan_lab.metrics.cache import ReferenceCache, tensor_md5
from dcgan_lab.metrics.classifier import classify, has_labels, load_or_train_classifier
from dcgan_lab.metrics.frechet import gaussian_stats
from dcgan_lab.nets.contract import evaluating
from dcgan_lab.plots import headless_pyplot

log = logging.getLogger(__name__)

LATENT_BLOCK = 1024  # rows of latents per draw (sample_latents)
DEFAULTS_FILE = CONF_DIR / "metrics" / "default.yaml"  # the one owner of every metrics option's default


@functools.cache
def _defaults_file() -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(DEFAULTS_FILE), resolve=True)


def defaults() -> dict[str, Any]:
    """Every metrics option with its default, read from conf/metrics/default.yaml (direct suites, tests)."""
    return copy.deepcopy(_defaults_file())


def settings_from(cfg: Mapping | None) -> dict[str, Any]:
    """The metrics config group as a plain dict, checked: one clear line per wrong value."""
    given = dict(cfg or {})
    known = defaults()
    unknown = sorted(set(given) - set(known) - registry.option_names())
    if unknown:
        raise ConfigError(f"unknown metrics option(s) {unknown}; known: {sorted(known)}")
    s = {**known, **given}
    if isinstance(s["enabled"], Sequence) and not isinstance(s["enabled"], str):  # list, tuple, ListConfig
        s["enabled"] = list(s["enabled"])
    from dcgan_lab.schema import problems  # each option's domain has one owner: the schema (imported late: it imports the registry)

    if found := problems({f"metrics.{key}": value for key, value in s.items()}):
        raise ConfigError(found[0])
    for entry in registry.enabled_metrics(s["enabled"]):
        if missing := [key for key in entry.options if key not in s]:
            raise ConfigError(f"metric {entry.name} reads metrics.{missing[0]}, which has no value: "
                              f"give it a default in {DEFAULTS_FILE.relative_to(CONF_DIR.parent)}")
    key, k = fewest_samples(s)
    if s["n_samples"] <= k:
        raise ConfigError(f"metrics.n_samples={s['n_samples']} is too small: use more than metrics.{key}={k} (e.g. 2000)")
    return s


def fewest_samples(settings: Mapping) -> tuple[str, int]:
    """(option, k): the metrics need more than k images, k-means's k or the k-NN balls' (one rule for metrics.n_samples
    and for the images evaluate.py is given)."""
    largest_k = max(("kmeans_k", "pr_k", "dc_k"), key=lambda key: settings[key])
    return largest_k, settings[largest_k]


@dataclass
class MetricReport:
    scalars: dict[str, float] = field(default_factory=dict)  # logged: classifier/fid, cluster/..., fid/10k, ...
    extras: dict[str, Any] = field(default_factory=dict)     # JSON only: class histogram, classifier record
    figures: list[Path] = field(default_factory=list)


@torch.no_grad()
def generate(generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, batch_size: int, device) -> torch.Tensor:
    """G(z[, labels]) in eval mode, `batch_size` latents at a time on `device`: images in [-1, 1] on the CPU."""
    images = []
    with evaluating(generator):
        for i in range(0, len(z), batch_size):
            extra = (labels[i : i + batch_size].to(device),) if labels is not None else ()
            images.append(generator(z[i : i + batch_size].to(device), *extra).float().cpu())
    return torch.cat(images)


def sample_latents(generator: nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The n latents (N, latent_dim) fixed by `seed`, and the labels for a class-conditional G (num_classes > 0):
    balanced, 0, 1, ..., K-1, 0, ... (else None). Every sampler of a saved G draws these: evaluation and export.

    Drawn LATENT_BLOCK rows at a time, so the first n of a larger draw are the n drawn alone (an evaluation with
    Inception draws inception_n_samples latents and measures the other metrics on the first n_samples). One
    torch.randn(n, d) gives the same values when n * d is a multiple of 16; otherwise it draws its last 16 values
    apart, and the first n of a larger draw were other latents."""
    noise = torch.Generator().manual_seed(seed)
    blocks = [torch.randn(LATENT_BLOCK, generator.latent_dim, generator=noise) for _ in range(-(-n // LATENT_BLOCK))]
    z = torch.cat(blocks)[:n] if blocks else torch.empty(0, generator.latent_dim)
    k = getattr(generator, "num_classes", 0) or 0
    return z, (torch.arange(n) % k if k else None)


def at_data_size(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images (N, C, h, w) at size x size, as the metrics measure them: a progressive G mid-growth renders
    below the data's size, and each of its pixels is repeated (nearest) up to it. Exports write the same pixels."""
    if tuple(pixels.shape[-2:]) == (size, size):
        return pixels
    return F.interpolate(pixels.float(), size=(size, size), mode="nearest").to(torch.uint8)


def sample_images(generator: nn.Module, n: int, batch_size: int, seed: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n images in [-1, 1] on the CPU (N, C, H, W) from `sample_latents`, G in eval mode, and their labels (the
    classifier checks them: classifier/accuracy)."""
    z, labels = sample_latents(generator, n, seed)
    return generate(generator, z, labels, batch_size, device), labels


@torch.no_grad()
def discriminator_outputs(discriminator: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
                          batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N,), features (N, F)) of `D(x, labels, with_features=True)` in eval mode, on the CPU; images
    (N, C, H, W) uint8 or in [-1, 1].

    Every family defines what its features are (DCGAN: the flattened 4x4 map, MLP: the last hidden layer,
    ResNet/progressive: the pooled map); a conditional D gets the labels, so a concat-conditioned D sees its
    label channels.
    """
    logits, features = [], []
    with evaluating(discriminator):
        for i in range(0, len(images), batch_size):
            extra = (labels[i : i + batch_size].to(device),) if labels is not None else ()
            out, h = discriminator(to_float(images[i : i + batch_size].to(device)), *extra, with_features=True)
            logits.append(out.float().flatten().cpu())
            features.append(h.float().flatten(1).cpu())
    return torch.cat(logits), torch.cat(features)


def discriminator_features(discriminator: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
                           batch_size: int, device) -> torch.Tensor:
    """D's own features of generated images (N, F), with the labels G drew them for (`discriminator_outputs`)."""
    return discriminator_outputs(discriminator, images, labels, batch_size, device)[1]


class ImageSubset:
    """images[indices] as a sequence whose slices and index tensors gather their rows when asked: a large reference
    (10,000 64x64 RGB training images are 123 MB) is read a chunk at a time, never copied whole."""

    def __init__(self, images: torch.Tensor, indices: torch.Tensor):
        self.images, self.indices = images, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key) -> torch.Tensor:
        return self.images[self.indices[key]]


@dataclass
class MetricContext:
    """What the entries of one evaluation share; each computed on first use (metrics/registry.py)."""

    suite: "MetricSuite"
    images: torch.Tensor                 # (n_samples, C, H, W) in [-1, 1] on the 8-bit grid, at the data's size
    labels: torch.Tensor | None          # the classes a conditional G was asked for, else None
    inception_images: torch.Tensor       # (inception_n_samples, C, H, W): images drawn with the same latents
    discriminator: nn.Module | None
    figures: Path | None                 # where entries write figures (None: metrics.figures=false or no folder)
    tag: str
    extras: dict[str, Any]               # JSON-only results (metrics.json, the callback ignores them)
    figure_paths: list[Path]             # figures written, shown on the dashboards
    _memo: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, Any]:
        return self.suite.s

    @property
    def prefix(self) -> str:
        return f"{self.tag}_" if self.tag else ""

    def classifier_reference(self) -> dict:
        """The lab classifier's features and Gaussian statistics on real training images (cached by key)."""
        return self.suite.classifier_reference()

    def classified(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, class probabilities) of the lab classifier on the generated images."""
        if "classified" not in self._memo:
            self._memo["classified"] = classify(self.suite.classifier(), self.images, device=self.suite.device)
        return self._memo["classified"]

    def d_features(self) -> torch.Tensor | None:
        """D's own features of the generated images (None without a discriminator)."""
        if "d_features" not in self._memo:
            self._memo["d_features"] = None if self.discriminator is None else discriminator_features(
                self.discriminator, self.images, self.labels, self.settings["batch_size"], self.suite.device)
        return self._memo["d_features"]

    def features(self) -> torch.Tensor | None:
        """The feature space of feature-based metrics: the lab classifier's where the data has labels, else D's (None
        when neither): one space per dataset, whichever metrics are enabled beside them."""
        return self.classified()[0] if self.suite.classifier_available() else self.d_features()


class MetricSuite:
    def __init__(self, settings: Mapping | None, datamodule, cache_dir: str | Path, device="cpu"):
        self.s = settings_from(settings)
        self.metrics = registry.enabled_metrics(self.s["enabled"])
        self.datamodule, self.device = datamodule, torch.device(device)
        self.cache_dir = Path(cache_dir)
        self.cache = ReferenceCache(cache_dir)
        self._classifier = None
        self.classifier_record: dict = {}
        self._inception = None
        self._inception_problem: str | None = None
        self._real_order: torch.Tensor | None = None
        self._real_md5: str | None = None
        self._separate_test: bool | None = None
        self._skips_said: set[str] = set()

    def needs(self, need: str) -> bool:
        """Whether an enabled metric needs `need` (registry.NEEDS)."""
        return any(need in metric.needs for metric in self.metrics)

    # ---- real data ---------------------------------------------------------------------------
    def _real(self, n: int | None = None):
        """(train uint8 images, their md5, a fixed random subset of up to n (default n_reference) indices).

        Subsets of every size are prefixes of one fixed permutation, so a smaller reference is part of a larger one."""
        train = self.datamodule.split("train")
        if self._real_order is None:
            self._real_order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
            self._real_md5 = tensor_md5(train.images)
        return train.images, self._real_md5, self._real_order[: n or self.s["n_reference"]].sort().values

    def copy_reference(self, n_held_out: int) -> tuple["ImageSubset", torch.Tensor]:
        """(reference, held out): disjoint sets of real uint8 training images. The held-out images are the last
        n_held_out (at most a fifth of the data) of the fixed permutation, the reference up to n_reference of the
        rest: real images the reference does not contain, to measure how near new data falls to it. The reference
        is a view of the training images, gathered a chunk at a time (no copy of up to n_reference images)."""
        images, _, _ = self._real()
        n_held_out = max(1, min(n_held_out, len(images) // 5))
        held_out = self._real_order[len(images) - n_held_out:]
        reference = self._real_order[: min(self.s["n_reference"], len(images) - n_held_out)]
        return ImageSubset(images, reference.sort().values), images[held_out]

    def copy_cells(self, reference: ImageSubset, n_held_out: int) -> dict:
        """The memorization metric's cells (`memorization.fit_cells`) of `copy_reference(n_held_out)`'s reference,
        fitted once and cached by key, like the reference statistics."""
        from dcgan_lab.metrics.memorization import fit_cells

        key = self._reference_key("copy_cells", copy_reference=len(reference), held_out=n_held_out,
                                  cells=self.s["copy_cells"], seed=self.s["seed"])
        return self.cache.get(key, lambda: fit_cells(reference, self.s["copy_cells"], self.s["seed"]))

    def has_held_out(self) -> bool:
        """Whether the dataset's test split holds images apart from its training split (an image folder's does not:
        its two splits are one tensor)."""
        if self._separate_test is None:
            train, test = self.datamodule.split("train"), self.datamodule.split("test")
            self._separate_test = test.images is not train.images and (
                len(test) != len(train) or not torch.equal(test.images, train.images))
        return self._separate_test

    def held_out(self, n: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """((training images, labels), (held-out images, labels)), n of each at most, uint8: a prefix of the fixed
        training permutation (`_real`), and a fixed draw from the test split (`has_held_out` must be true)."""
        train, test = self.datamodule.split("train"), self.datamodule.split("test")
        n = min(n, len(train), len(test))
        _, _, first = self._real(n)
        picked = torch.randperm(len(test), generator=torch.Generator().manual_seed(self.s["seed"]))[:n]
        return (train.images[first], train.labels[first]), (test.images[picked], test.labels[picked])

    def _reference_key(self, what: str, n: int | None = None, **extra) -> dict:
        images, md5, subset = self._real(n)
        return {"what": what, "dataset": self.datamodule.name, "split": "train", "image_size": images.shape[-1],
                "channels": images.shape[1], "data_md5": md5, "n_reference": len(subset), **extra}

    # ---- classifier metrics ------------------------------------------------------------------
    def classifier_available(self) -> bool:
        """An enabled metric uses the lab classifier or the samples' features (on labelled data: its), and the data
        has labels to train it on."""
        return (self.needs("classifier") or self.needs("features")) and has_labels(self.datamodule)

    def classifier(self):
        if self._classifier is None:
            self._classifier, self.classifier_record = load_or_train_classifier(
                self.datamodule, self.cache_dir, epochs=self.s["classifier_epochs"], device=self.device)
        return self._classifier

    def prepare(self) -> None:
        """What the first evaluation would otherwise pay for mid-run: the classifier is trained on first use."""
        if self.classifier_available():
            self.classifier()

    def classifier_reference(self) -> dict:
        """Classifier features and their Gaussian statistics on real training images (cached by key)."""
        model = self.classifier()
        key = self._reference_key("classifier", weights=self.classifier_record["weights"])

        def compute():
            images, _, subset = self._real()
            feats, _ = classify(model, images[subset], device=self.device)
            mu, sigma = gaussian_stats(feats)
            return {"features": feats, "mu": mu, "sigma": sigma}

        return self.cache.get(key, compute)

    def reference_labels(self) -> torch.Tensor:
        """The class labels of the real images behind `classifier_reference` (the same fixed subset)."""
        _, _, subset = self._real()
        return self.datamodule.split("train").labels[subset]

    # ---- Inception metrics -------------------------------------------------------------------
    def inception(self):
        """torch-fidelity's Inception (see inception_weights for where its weights come from), or None after
        one warning saying how to provide the weights."""
        from dcgan_lab.metrics.inception import InceptionUnavailable, load_inception

        if self._inception is None and self._inception_problem is None:
            try:
                self._inception = load_inception(self.s["inception_weights"], self.cache_dir, self.device)
            except InceptionUnavailable as exc:
                self._inception_problem = f"Inception metrics skipped: {exc}"
                log.warning("%s", self._inception_problem)
            else:
                if not self._inception.weights.has_classifier:
                    from dcgan_lab.metrics.inception import IS_NEEDS_CLASSIFIER

                    log.warning("%s", IS_NEEDS_CLASSIFIER)
        return self._inception

    def _inception_reference(self, inception, n: int) -> dict:
        from dcgan_lab.metrics.inception import inception_features
        from dcgan_lab.metrics.inception_weights import TORCH_FIDELITY_EXTRACTOR

        key = self._reference_key("inception", n, extractor=TORCH_FIDELITY_EXTRACTOR, weights=inception.weights.md5)

        def compute():
            images, _, subset = self._real(n)
            bs = self.s["batch_size"]
            batches = (images[subset[i : i + bs]] for i in range(0, len(subset), bs))
            feats = inception_features(inception, batches, len(subset), "Inception features, real (once, cached)")
            mu, sigma = gaussian_stats(feats["2048"])
            return {"features": feats["2048"], "mu": mu, "sigma": sigma}

        return self.cache.get(key, compute)

    def _inception_manifold(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        """pr_inception/*: precision, recall, density and coverage on the features FID uses (labelled or not)."""
        from dcgan_lab.metrics.precision_recall import manifold_metrics

        k = max(self.s["pr_k"], self.s["dc_k"])
        if min(len(real), len(fake)) <= k:
            log.warning("pr_inception/* skipped: precision, recall, density and coverage need more than k=%d images "
                        "on each side, and Inception saw %d real, %d generated", k, len(real), len(fake))
            return {}
        scalars = manifold_metrics(real.to(self.device), fake.to(self.device), self.s["pr_k"], self.s["dc_k"], self.s["seed"])
        return {f"pr_inception/{name}": value for name, value in scalars.items()}

    def inception_scalars(self, fake_images: torch.Tensor) -> tuple[dict[str, float], dict[str, Any]]:
        """(fid/<n>, kid/*, is/*, pr_inception/* scalars; metadata naming the extractor, the weights' md5 and the
        counts)."""
        from dcgan_lab.metrics.inception import IS_NEEDS_CLASSIFIER, FID_RANK, inception_features, inception_metrics, protocol_name

        inception, n = self.inception(), len(fake_images)
        n_real = min(self.s["inception_n_reference"] or n, len(self.datamodule.split("train")))
        reference = self._inception_reference(inception, n_real)
        bs = self.s["batch_size"]
        fake = inception_features(inception, (fake_images[i : i + bs] for i in range(0, n, bs)), n, "Inception features, generated")
        if n < FID_RANK:
            log.warning("fid/%s uses %d generated images (< %d): the feature covariance is rank-deficient and FID is "
                        "biased upwards; compare it only with FIDs of the same sample count", protocol_name(n), n, FID_RANK)
        values = inception_metrics({"2048": reference["features"]}, fake, (reference["mu"], reference["sigma"]),
                                   seed=self.s["seed"] + 2020)
        scalars = {f"fid/{protocol_name(n)}": values.pop("fid"), "fid/n_samples": float(n), **values,
                   **self._inception_manifold(reference["features"], fake["2048"])}
        metadata = {**inception.metadata(), "inception/n_generated": n, "inception/n_reference": n_real}
        if not inception.weights.has_classifier:
            metadata["is_skipped"] = IS_NEEDS_CLASSIFIER
        log.info("Inception metrics: %s", ", ".join(f"{k}={v}" for k, v in metadata.items() if k != "is_skipped"))
        return scalars, metadata

    # ---- everything --------------------------------------------------------------------------
    def _unmet(self, metric: registry.Metric, discriminator: nn.Module | None) -> str | None:
        """Why this evaluation cannot run `metric` (None: it can)."""
        for need in sorted(metric.needs):
            if need in ("labels", "classifier") and not has_labels(self.datamodule):
                return f"{metric.name} skipped: it needs class labels and dataset {self.datamodule.name} has none"
            if need in ("d_features", "discriminator") and discriminator is None:
                return f"{metric.name} skipped: it needs the discriminator and none was given"
            if need == "distinct_images" and not self.datamodule.distinct_images:
                return (f"{metric.name} skipped: it needs real images that are not near-copies of one another, and "
                        f"the images of dataset {self.datamodule.name} overlap (dataset.distinct_images=false)")
            if need == "held_out" and not self.has_held_out():
                return (f"{metric.name} skipped: it needs real images the run did not train on, and dataset "
                        f"{self.datamodule.name} has no test split apart from its training images")
            if need == "inception" and self.inception() is None:
                return self._inception_problem
        return None

    def evaluate(self, generator: nn.Module, discriminator: nn.Module | None = None, n_samples: int | None = None,
                 inception: bool = False, figures_dir: str | Path | None = None, tag: str = "",
                 inception_n_samples: int | None = None) -> MetricReport:
        """Every enabled metric for G's samples (metrics.seed fixes the latents); those that need Inception only with
        `inception=True` (minutes on a CPU). `inception_n_samples` overrides metrics.inception_n_samples (the
        training callback's CPU default)."""
        started = time.perf_counter()
        n = n_samples or self.s["n_samples"]
        n_inception = inception_n_samples or self.s["inception_n_samples"] or n
        use_inception = inception and any("inception" in m.needs for m in self.metrics)
        images, labels = sample_images(generator, max(n, n_inception) if use_inception else n, self.s["batch_size"],
                                       self.s["seed"], self.device)
        return self.measure(images, labels, discriminator, n, n_inception, inception, figures_dir, tag, started)

    def measure(self, images: torch.Tensor, labels: torch.Tensor | None = None, discriminator: nn.Module | None = None,
                n: int | None = None, n_inception: int | None = None, inception: bool = False,
                figures_dir: str | Path | None = None, tag: str = "", started: float | None = None) -> MetricReport:
        """Every enabled metric for given images (N, C, H, W), uint8 or in [-1, 1]: the first n of them (default
        all), and the first n_inception (default n) for Inception. Measured as 8-bit pixels, as every saved image
        is: a sample folder written by `dcgan_lab.export` measures the same as the G it came from."""
        started = time.perf_counter() if started is None else started
        n = n or len(images)
        n_inception = min(n_inception or n, len(images))
        metrics = [m for m in self.metrics if inception or "inception" not in m.needs]
        # One memory layout whatever the source (a channels_last G, a (N, H, W, 1) array): convolutions choose
        # their kernels by layout, and equal pixels should give equal numbers.
        pixels = to_uint8(images).clone(memory_format=torch.contiguous_format)
        images = to_float(at_data_size(pixels, self.datamodule.image_size))
        report = MetricReport()
        report.scalars["metrics/n_samples"] = float(n)
        figures = Path(figures_dir) if figures_dir is not None and self.s["figures"] else None
        if figures is not None:
            figures.mkdir(parents=True, exist_ok=True)
        ctx = MetricContext(self, images[:n], None if labels is None else labels[:n], images[:n_inception],
                            discriminator, figures, tag, report.extras, report.figures)
        for metric in metrics:
            problem = self._unmet(metric, discriminator)
            if problem is not None:
                report.extras[f"{metric.name}_skipped"] = problem  # metrics.json says why it is missing
                if metric.name not in self._skips_said and "inception" not in metric.needs:  # inception() warned
                    self._skips_said.add(metric.name)
                    log.info("%s", problem)
                continue
            scalars = metric.compute(ctx)
            undeclared = sorted(k for k in scalars if metric.direction(k) is None)
            if undeclared and metric.name not in self._skips_said:
                self._skips_said.add(metric.name)
                log.warning("metric %s logs %s, which its registry entry does not declare (no direction: no best, "
                            "no report column)", metric.name, undeclared)
            report.scalars.update(scalars)
        report.scalars["metrics/eval_time_s"] = time.perf_counter() - started
        return report


def save_histogram(histogram: list[int], path: Path, title: str) -> Path:
    plt = headless_pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(np.arange(len(histogram)), histogram, color="tab:blue")
    ax.set(title=f"{title} generated samples per predicted class".strip(), xlabel="class", ylabel="samples",
           xticks=np.arange(len(histogram)))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
