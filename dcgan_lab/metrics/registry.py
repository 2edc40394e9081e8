"""The metric registry: everything the lab knows about a metric, in one entry (stylegan2-ada's metrics/metric_main.py).

An entry is a function registered by `@register_metric`. Its name is the token users put in `metrics.enabled`;
beside it: the scalars it logs with their better direction (+1 higher is better, -1 lower, 0 neither; globs
allowed, the first matching pattern wins), what it needs (NEEDS), the names of its options (`metrics.<option>`; their defaults live in
conf/metrics/default.yaml),
which scalars head the one-line log and the report's table. The function takes the shared MetricContext of one
evaluation (metrics/suite.py: generated images, the real reference, features, settings) and returns {scalar: value}.

The suite runs the enabled entries; runs.direction, the report's columns and the metric callback's log line read
this table. A new metric is one entry here (or in any module imported before the run, e.g. a test), plus its knobs
(if any): a default in conf/metrics/default.yaml and a domain in dcgan_lab/schema.py (tests/test_schema.py asks).
The computations live in their own modules (classifier.py, clustering.py, precision_recall.py, inception.py): the
entries only wire them.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

if TYPE_CHECKING:
    from dcgan_lab.metrics.suite import MetricContext

# What an entry may need; the suite skips an entry whose needs the evaluation cannot meet, saying why once.
NEEDS = {
    "labels": "class labels in the dataset",
    "classifier": "the lab's classifier (trained once per labelled dataset, then cached)",
    "features": "feature vectors of the samples: the lab classifier's on labelled data, else D's (never skipped: "
                "without either, the entry measures what it can without them)",
    "inception": "Inception weights (torch-fidelity's file or the package registry's copy); minutes on a CPU, "
                 "so the callback runs these entries only where metrics.inception_during_training says",
    "d_features": "the discriminator's features (training runs and checkpoints have them)",
    "discriminator": "the discriminator itself (training runs and checkpoints have it)",
    "held_out": "real images the run did not train on (the dataset's test split, where it is not the training data)",
    "distinct_images": "real images that are not near-copies of one another (dataset.distinct_images; photo_patches' "
                       "overlapping, mirrored patches are not)",
}


@dataclass(frozen=True)
class Metric:
    name: str
    compute: Callable[["MetricContext"], dict[str, float]]
    scalars: tuple[tuple[str, int], ...]       # (scalar key or glob, direction); first match wins
    needs: frozenset[str] = frozenset()
    options: tuple[str, ...] = ()             # metrics.<option> keys it reads (defaults: conf/metrics/default.yaml)
    headline: tuple[str, ...] = ()             # globs: the callback's one-line log
    report: tuple[str, ...] | None = None      # globs: report.md's columns; None = every scalar with a direction
    doc: str = ""

    def direction(self, key: str) -> int | None:
        """The direction of `key` if this entry produces it, else None."""
        return next((sign for pattern, sign in self.scalars if fnmatch(key, pattern)), None)

    @property
    def report_columns(self) -> tuple[str, ...]:
        return self.report if self.report is not None else tuple(p for p, sign in self.scalars if sign)


METRICS: dict[str, Metric] = {}


def register_metric(name: str | None = None, *, scalars: Mapping[str, int], needs: Iterable[str] = (),
                    options: Iterable[str] = (), headline: Iterable[str] = (),
                    report: Iterable[str] | None = None):
    """Decorator: `@register_metric(scalars={"mean_brightness": -1})` registers the function under its own name."""

    def decorator(fn: Callable[["MetricContext"], dict[str, float]]):
        entry = Metric(
            name=name or fn.__name__, compute=fn, scalars=tuple(dict(scalars).items()), needs=frozenset(needs),
            options=tuple(options), headline=tuple(headline), report=None if report is None else tuple(report),
            doc=(fn.__doc__ or "").strip().split("\n")[0],
        )
        if unknown := sorted(entry.needs - set(NEEDS)):
            raise ValueError(f"metric {entry.name}: unknown needs {unknown}; known: {sorted(NEEDS)}")
        if bad := [p for p, sign in entry.scalars if sign not in (-1, 0, 1)]:
            raise ValueError(f"metric {entry.name}: the direction of {bad} must be -1, 0 or +1")
        for other in METRICS.values():
            if other.name != entry.name and (shared := sorted(set(other.options) & set(entry.options))):
                raise ValueError(f"metric {entry.name}: option(s) {shared} already belong to metric {other.name}")
        METRICS[entry.name] = entry
        return fn

    return decorator


# ---- what the rest of the lab reads ------------------------------------------------------------------
def direction(key: str) -> int:
    """-1 if lower is better, +1 if higher is better, 0 if neither or no registered metric logs `key`."""
    return next((sign for entry in METRICS.values() if (sign := entry.direction(key)) is not None), 0)


def is_metric_scalar(key: str) -> bool:
    """Whether some registered metric logs `key` (whatever its direction)."""
    return any(entry.direction(key) is not None for entry in METRICS.values())


def enabled_problem(names) -> str | None:
    """None when `names` is a list of registered metric names, else what it must be (one line's end)."""
    known = ", ".join(METRICS)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        return f"must be a list of metric names from [{known}]"
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        return (f"must be a list of registered metrics: {', '.join(map(repr, unknown))} "
                f"{'is' if len(unknown) == 1 else 'are'} not among [{known}] (dcgan_lab/metrics/registry.py)")
    return None


def enabled_metrics(names: Iterable[str]) -> list[Metric]:
    """The entries named, in registry order (so logs and tables keep one order whatever the YAML's order)."""
    wanted = set(names)
    return [entry for entry in METRICS.values() if entry.name in wanted]


def any_needs(names: Iterable[str], need: str) -> bool:
    return any(need in entry.needs for entry in enabled_metrics(names))


def option_names() -> set[str]:
    """Every registered entry's options (accepted whether or not the entry is enabled)."""
    return {key for entry in METRICS.values() for key in entry.options}


def headline_keys(scalars: Iterable[str]) -> list[str]:
    """The keys of `scalars` that entries put in the one-line log, in registry order."""
    keys = list(scalars)
    found: list[str] = []
    for entry in METRICS.values():
        for pattern in entry.headline:
            found += sorted(k for k in keys if fnmatch(k, pattern) and k not in found)
    return found


def report_columns() -> list[str]:
    """The report's column patterns, in registry order."""
    return [pattern for entry in METRICS.values() for pattern in entry.report_columns]


# ---- the lab's metrics ------------------------------------------------------------------------------------
@register_metric(
    scalars={"classifier/fid": -1, "classifier/classes_covered": 1, "classifier/kl_uniform": -1,
             "classifier/confidence": 1, "classifier/accuracy": 1, "classifier/intra_fid": -1},
    needs=("labels", "classifier"),
    options=("classifier_epochs", "coverage_threshold"),
    headline=("classifier/fid", "classifier/classes_covered"),
    report=("classifier/fid", "classifier/classes_covered", "classifier/intra_fid"),  # intra-FID: conditional runs only
)
def classifier(ctx: "MetricContext") -> dict[str, float]:
    """FID on the lab classifier's features, classes covered, KL to uniform, confidence (+ accuracy and intra-FID
    for a conditional G)."""
    from dcgan_lab.metrics.frechet import frechet_distance, gaussian_stats, per_class_frechet_distances
    from dcgan_lab.metrics.modes import mode_metrics

    reference = ctx.classifier_reference()
    features, probs = ctx.classified()
    modes = mode_metrics(probs, ctx.settings["coverage_threshold"])
    histogram = modes.pop("histogram")
    ctx.extras["classifier/histogram"] = histogram
    ctx.extras["classifier/test_accuracy"] = ctx.suite.classifier_record.get("test_accuracy")
    scalars = {"classifier/fid": frechet_distance(*gaussian_stats(features), reference["mu"], reference["sigma"]),
               **{f"classifier/{k}": v for k, v in modes.items()}}
    if ctx.labels is not None:  # conditional G: does it draw the class it was asked for, and each class well?
        scalars["classifier/accuracy"] = float((probs.argmax(1) == ctx.labels).double().mean())  # 0.1, not 0.10000000149
        per_class = per_class_frechet_distances(features, ctx.labels, reference["features"], ctx.suite.reference_labels())
        if per_class:
            scalars["classifier/intra_fid"] = sum(per_class.values()) / len(per_class)
            ctx.extras["classifier/intra_fid_per_class"] = per_class
    if ctx.figures is not None:
        from dcgan_lab.metrics.suite import save_histogram

        ctx.figure_paths.append(save_histogram(histogram, ctx.figures / f"{ctx.prefix}class_histogram.png", ctx.tag))
    return scalars


@register_metric(
    scalars={"cluster/silhouette": 1, "cluster/compactness": -1, "cluster/balance": 1,
             "cluster_feat/silhouette": 1, "cluster_feat/compactness": -1, "cluster_feat/balance": 1},
    needs=("features",),  # cluster_feat/*: on labelled data always the classifier's, whatever else is enabled
    options=("kmeans_k", "pca_components"),
    headline=("cluster/silhouette",),
    report=("cluster/silhouette", "cluster/compactness"),
)
def clustering(ctx: "MetricContext") -> dict[str, float]:
    """KMeans on PCA of the pixels (cluster/*) and of the classifier's, else D's, features (cluster_feat/*)."""
    from dcgan_lab.metrics import clustering as clus

    s = ctx.settings
    spaces = {"cluster": ctx.images}
    features = ctx.features()
    if features is not None:
        spaces["cluster_feat"] = features
    scalars = {}
    for name, x in spaces.items():
        result = clus.cluster_study(x, k=s["kmeans_k"], pca_components=s["pca_components"] or None, seed=s["seed"])
        scalars.update({f"{name}/{k}": v for k, v in result.scalars().items()})
        if ctx.figures is not None:
            space = "pixels" if name == "cluster" else "features"
            title = f"{ctx.tag} KMeans k={s['kmeans_k']} on {space}".strip()
            ctx.figure_paths += [
                clus.save_pca_scatter(result, ctx.figures / f"{ctx.prefix}{space}_pca.png", title),
                clus.save_silhouette_plot(result, ctx.figures / f"{ctx.prefix}{space}_silhouette.png", title),
                clus.save_cluster_grid(result, ctx.images, ctx.figures / f"{ctx.prefix}{space}_clusters.png"),
            ]
    return scalars


@register_metric(
    scalars={"fid/n_samples": 0, "fid/*": -1, "kid/mean": -1, "kid/std": 0, "kid/subset_size": 0,
             "is/mean": 1, "is/std": 0, "pr_inception/precision": 1, "pr_inception/recall": 1,
             "pr_inception/density": 0, "pr_inception/coverage": 1},
    needs=("inception",),
    options=("inception_during_training", "inception_n_samples", "inception_n_reference", "inception_weights"),
    headline=("fid/[0-9]*",),
    report=("fid/*", "kid/mean", "is/mean", "pr_inception/precision", "pr_inception/recall"),
)
def inception(ctx: "MetricContext") -> dict[str, float]:
    """FID (named by its sample count: fid/10k), KID and IS on torch-fidelity's 2015 TF-Inception, and precision,
    recall, density and coverage on the same features (any dataset: no labels needed; k = metrics.pr_k, dc_k)."""
    scalars, metadata = ctx.suite.inception_scalars(ctx.inception_images)
    ctx.extras.update(metadata)
    return scalars


@register_metric(
    # density has no better direction: above 1, the fakes crowd into the densest real regions
    scalars={"pr/precision": 1, "pr/recall": 1, "pr/density": 0, "pr/coverage": 1},
    needs=("labels", "classifier"),
    options=("pr_k", "dc_k"),
    headline=("pr/precision", "pr/recall"),
)
def precision_recall(ctx: "MetricContext") -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020) on the lab
    classifier's features."""
    from dcgan_lab.metrics.precision_recall import manifold_metrics

    features, _ = ctx.classified()
    reference = ctx.classifier_reference()["features"]
    scalars = manifold_metrics(reference, features, ctx.settings["pr_k"], ctx.settings["dc_k"], ctx.settings["seed"])
    return {f"pr/{k}": v for k, v in scalars.items()}


@register_metric(
    scalars={"memorization/copies": -1, "memorization/nn_ratio": 0, "memorization/ct": 0},
    needs=("distinct_images",),
    options=("copy_quantile", "copy_cells"),
    headline=("memorization/copies",),
    report=("memorization/copies",),
)
def memorization(ctx: "MetricContext") -> dict[str, float]:
    """Near-copies of training images: samples' pixel distance to the training set against held-out real images',
    as shares and ratios and as Meehan et al.'s cell-wise test (ct)."""
    from dcgan_lab.metrics.memorization import copy_study, save_neighbour_grid

    reference, held_out = ctx.suite.copy_reference(len(ctx.images))
    cells = ctx.suite.copy_cells(reference, len(held_out))
    study = copy_study(ctx.images.to(ctx.suite.device), reference, held_out, ctx.settings["copy_quantile"], cells=cells)
    if ctx.figures is not None:
        ctx.figure_paths.append(save_neighbour_grid(ctx.images, reference, study,
                                                    ctx.figures / f"{ctx.prefix}nearest_training_images.png"))
    return {"memorization/copies": study["copies"], "memorization/nn_ratio": study["nn_ratio"], "memorization/ct": study["ct"]}


@register_metric(
    # The AUC itself has no better side: below 0.5 is chance too (D does not favour held-out images), so ranking it
    # lower-is-better would crown noise. What is ranked is its excess over chance.
    scalars={"d_overfit/auc": 0, "d_overfit/auc_excess": -1},
    needs=("discriminator", "held_out", "distinct_images"),
    headline=("d_overfit/auc",),
    report=("d_overfit/auc_excess",),
)
def d_overfitting(ctx: "MetricContext") -> dict[str, float]:
    """D's outputs on training vs held-out real images (ADA's overfitting signal): AUC 0.5 = none, 1 = memorised."""
    from dcgan_lab.metrics.overfitting import membership_auc, save_score_histogram
    from dcgan_lab.metrics.suite import discriminator_outputs

    (train, train_labels), (held_out, held_out_labels) = ctx.suite.held_out(len(ctx.images))
    conditional = getattr(ctx.discriminator, "num_classes", 0)
    scores = [discriminator_outputs(ctx.discriminator, images, labels if conditional else None,
                                    ctx.settings["batch_size"], ctx.suite.device)[0]
              for images, labels in ((train, train_labels), (held_out, held_out_labels))]
    auc = membership_auc(*scores)
    if ctx.figures is not None:
        ctx.figure_paths.append(save_score_histogram(*scores, auc, ctx.figures / f"{ctx.prefix}d_scores.png", ctx.tag))
    return {"d_overfit/auc": auc, "d_overfit/auc_excess": max(auc - 0.5, 0.0)}
