"""The D-overfitting metric: closed-form AUCs, stand-in discriminators whose answer is known (one that has
memorised the training images, one that scores brightness), an image folder with nothing held out, and a real run."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from dcgan_lab.data.datamodule import to_float
from dcgan_lab.metrics import MetricSuite
from dcgan_lab.metrics.overfitting import membership_auc
from dcgan_lab.pipeline import train
from dcgan_lab.report import Job, Variant, best_variants, table_columns

from .test_memorization import ImageBank


def test_membership_auc_counts_pairs_and_ties_half():
    t = torch.tensor
    assert membership_auc(t([1.0, 2.0, 3.0]), t([0.0, 0.0])) == 1.0
    assert membership_auc(t([0.0, 0.0]), t([1.0, 2.0, 3.0])) == 0.0
    assert membership_auc(t([1.0]), t([1.0])) == 0.5
    assert membership_auc(t([0.0, 2.0]), t([1.0])) == 0.5
    assert membership_auc(t([0.0, 2.0, 2.0]), t([1.0, 2.0])) == pytest.approx((0 + 1.5 + 1.5) / 6)


class StandInDiscriminator(nn.Module):
    """D(x) = score(x); its features are the pixels. `memory`: the score is minus the distance to the nearest
    memorised image (a D that has learned its training set); else the mean brightness (one that has not)."""

    num_classes = 0

    def __init__(self, memory: torch.Tensor | None = None):
        super().__init__()
        self.memory = None if memory is None else to_float(memory).flatten(1)

    def forward(self, x, labels=None, with_features=False):
        flat = x.flatten(1)
        score = -torch.cdist(flat, self.memory).min(1).values if self.memory is not None else flat.mean(1)
        return (score, flat) if with_features else score


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    from .conftest import compose_config

    cfg = compose_config(tmp_path_factory.mktemp("run"), ["logger=csv"])
    return MetricSuite({"enabled": ["d_overfitting"], "n_samples": 400, "batch_size": 128}, instantiate(cfg.dataset),
                       tmp_path_factory.mktemp("cache"))


def test_a_discriminator_that_memorised_its_training_images_scores_1(suite, tmp_path):
    noise = torch.zeros(400, 1, 32, 32)
    memorised = StandInDiscriminator(suite.datamodule.split("train").images)
    report = suite.evaluate(ImageBank(noise), memorised, figures_dir=tmp_path)
    assert report.scalars["d_overfit/auc"] == 1.0
    assert report.scalars["d_overfit/auc_excess"] == 0.5  # what a report ranks: the AUC above chance
    assert (tmp_path / "d_scores.png").stat().st_size > 0
    # The held-out digits are the test split's, not training images: every one of them is away from the memory.
    (train_images, _), (held_out, _) = suite.held_out(400)
    assert len(train_images) == len(held_out) == 400
    distances = torch.cdist(held_out.flatten(1).float(), suite.datamodule.split("train").images.flatten(1).float())
    assert (distances.min(1).values > 0).all()


def test_a_discriminator_blind_to_membership_scores_about_half(suite):
    report = suite.evaluate(ImageBank(torch.zeros(400, 1, 32, 32)), StandInDiscriminator())
    auc = report.scalars["d_overfit/auc"]
    assert 0.42 < auc < 0.58
    assert report.scalars["d_overfit/auc_excess"] == max(auc - 0.5, 0.0)


def test_an_auc_below_chance_is_not_ranked_better():
    # 0.47 against 0.49 is noise around 0.5, not less overfitting: a report ranks the excess over chance, not the AUC.
    aucs = {"below_chance": 0.47, "near_chance": 0.49, "overfit": 0.60}
    variants = [Variant(label, [Job(Path(label), 0, [label], {"status": "ok"},
                                    {"d_overfit/auc": auc, "d_overfit/auc_excess": max(auc - 0.5, 0.0)})])
                for label, auc in aucs.items()]
    assert best_variants(variants, "d_overfit/auc") == set()
    assert best_variants(variants, "d_overfit/auc_excess") == {"below_chance", "near_chance"}
    assert "d_overfit/auc_excess" in table_columns(variants) and "d_overfit/auc" not in table_columns(variants)


def test_an_image_folder_holds_nothing_out_and_says_so(tmp_path):
    from PIL import Image

    from .conftest import compose_config

    for i, image in enumerate(torch.randint(0, 256, (12, 28, 28), dtype=torch.uint8)):
        Image.fromarray(image.numpy()).save(tmp_path / f"{i}.png")
    cfg = compose_config(tmp_path / "run", ["logger=csv", "dataset=image_folder", f"dataset.path={tmp_path}",
                                            "dataset.channels=1", "dataset.image_size=32", f"paths.cache_dir={tmp_path / 'cache'}"])
    datamodule = instantiate(cfg.dataset)
    suite = MetricSuite({"enabled": ["d_overfitting"], "n_samples": 12, "batch_size": 12, "kmeans_k": 2, "pr_k": 2},
                        datamodule, tmp_path / "cache")
    report = suite.evaluate(ImageBank(torch.zeros(12, 1, 32, 32)), StandInDiscriminator())
    assert "d_overfit/auc" not in report.scalars
    assert report.extras["d_overfitting_skipped"] == ("d_overfitting skipped: it needs real images the run did not "
                                                      "train on, and dataset image_folder has no test split apart from "
                                                      "its training images")
    # Finding that out cost no second copy of the images: the folder's two splits are one tensor.
    assert datamodule.split("test").images is datamodule.split("train").images


def test_photo_patches_overlap_one_another_so_copy_and_overfitting_metrics_skip_with_their_line(tmp_path):
    """Its patches are cut from three photographs on an overlapping grid, and mirrored: a held-out or test patch has
    near-copies among the training patches, so memorization and d_overfitting would not measure copying there."""
    from .conftest import compose_config

    cfg = compose_config(tmp_path / "run", ["logger=csv", "dataset=photo_patches", "dataset.image_size=16"])
    suite = MetricSuite({"enabled": ["memorization", "d_overfitting"], "n_samples": 12,
                         "batch_size": 12, "kmeans_k": 3, "pr_k": 2}, instantiate(cfg.dataset), tmp_path / "cache")
    report = suite.evaluate(ImageBank(torch.zeros(12, 3, 16, 16)), StandInDiscriminator())
    assert not [name for name in report.scalars if name.startswith(("memorization/", "d_overfit/"))]
    for family in ("memorization", "d_overfitting"):
        assert report.extras[f"{family}_skipped"] == (f"{family} skipped: it needs real images that are not near-copies "
                                                      "of one another, and the images of dataset photo_patches overlap "
                                                      "(dataset.distinct_images=false)")


def test_a_training_run_logs_the_auc_of_its_own_discriminator(make_cfg):
    result = train(make_cfg("metrics=default", "metrics.n_samples=100", "metrics.every_n_epochs=1",
                            "metrics.enabled=[d_overfitting]", "trainer.max_epochs=2"))
    run = Path(result["output_dir"])
    with open(run / "metrics.csv") as handle:
        values = [float(row["d_overfit/auc"]) for row in csv.DictReader(handle) if row.get("d_overfit/auc")]
    assert len(values) == 2 and all(0 <= v <= 1 for v in values)
    assert len(values) == len(set(values))  # D changed between the two evaluations, and so did its scores
    assert sorted(p.name for p in (run / "metrics").glob("*.png")) == ["epoch0000_d_scores.png", "epoch0001_d_scores.png"]
