"""The metrics classifier, the metric callback inside a real training run, and evaluate.py on its checkpoint.

The classifier is trained once into the repo's .cache (as a user's first run would) and reused afterwards.
"""
from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from dcgan_lab.data.datamodule import fit_to_size, to_float
from dcgan_lab.data.sources import mnist_mini as mnist_mini_source
from dcgan_lab.metrics import MetricSuite, mode_metrics
from dcgan_lab.metrics.classifier import classify, load_or_train_classifier
from dcgan_lab.nets.contract import GeneratorBase
from dcgan_lab.pipeline import train

from .conftest import PYTHON, ROOT

CONTRACT = [
    "classifier/fid", "classifier/classes_covered", "classifier/kl_uniform", "classifier/confidence",
    "cluster/silhouette", "cluster/compactness", "cluster/balance",
    "cluster_feat/silhouette", "cluster_feat/compactness", "cluster_feat/balance",
    "pr/precision", "pr/recall", "pr/density", "pr/coverage",
]


@pytest.fixture(scope="module")
def mnist_mini(tmp_path_factory):
    from .conftest import compose_config

    cfg = compose_config(tmp_path_factory.mktemp("run"), ["logger=csv"])
    return instantiate(cfg.dataset), cfg.paths.cache_dir


def test_classifier_reaches_95_percent_on_the_held_out_digits(mnist_mini):
    datamodule, cache_dir = mnist_mini
    model, record = load_or_train_classifier(datamodule, cache_dir)
    test = datamodule.split("test")
    _, probs = classify(model, test.images)
    accuracy = float((probs.argmax(1) == test.labels).float().mean())
    assert accuracy == pytest.approx(record["test_accuracy"], abs=1e-6)  # the record beside the weights is true
    assert accuracy >= 0.95
    assert record["data_md5"] and record["test_images"] == 500


def test_real_balanced_digits_cover_all_ten_classes(mnist_mini):
    datamodule, cache_dir = mnist_mini
    model, _ = load_or_train_classifier(datamodule, cache_dir)
    _, probs = classify(model, datamodule.split("test").images)  # 50 real digits of each class
    m = mode_metrics(probs)
    assert m["classes_covered"] == 10
    assert m["kl_uniform"] == pytest.approx(0.0, abs=0.01)


def test_intra_fid_catches_a_conditional_generator_that_draws_the_wrong_class(mnist_mini, tmp_path):
    """The 500 unseen test digits as the samples of a conditional G, labelled right or shifted by one class: pooled
    over labels they are the same images (same classifier FID, all classes covered), but only the right labels
    match each class's real digits (Miyato & Koyama 2018's intra-FID; classifier/accuracy agrees)."""
    from dcgan_lab.metrics.frechet import frechet_distance, gaussian_stats

    datamodule, cache_dir = mnist_mini
    suite = MetricSuite({"enabled": ["classifier"], "figures": False}, datamodule, cache_dir)
    test = datamodule.split("test")
    right = suite.measure(test.images, test.labels)
    wrong = suite.measure(test.images, (test.labels + 1) % 10)
    unconditional = suite.measure(test.images)
    assert right.scalars["classifier/fid"] == wrong.scalars["classifier/fid"] == unconditional.scalars["classifier/fid"]
    assert right.scalars["classifier/accuracy"] > 0.95 and wrong.scalars["classifier/accuracy"] < 0.05
    for measured in (right, wrong):  # a share of the 500, as metrics.csv shows it: k/500 exactly, no float32 tail
        accuracy = measured.scalars["classifier/accuracy"]
        assert accuracy == round(accuracy * len(test)) / len(test)
    assert "classifier/intra_fid" not in unconditional.scalars  # an unconditional G has no labels to check
    assert wrong.scalars["classifier/intra_fid"] > 10 * right.scalars["classifier/intra_fid"]
    # Class 3 by hand: the generated 3s against the real training 3s behind the reference statistics.
    features, _ = classify(suite.classifier(), test.images)
    reference = suite.classifier_reference()["features"]
    train_labels = datamodule.split("train").labels
    expected = frechet_distance(*gaussian_stats(features[test.labels == 3]), *gaussian_stats(reference[train_labels == 3]))
    per_class = right.extras["classifier/intra_fid_per_class"]
    assert sorted(per_class) == list(range(10)) and per_class[3] == pytest.approx(expected, rel=1e-6)
    assert right.scalars["classifier/intra_fid"] == pytest.approx(sum(per_class.values()) / 10)


def test_cluster_feat_is_measured_on_the_classifiers_features_whatever_else_is_enabled(mnist_mini, tmp_path):
    """README: cluster_feat/* on the classifier's features (D's for unlabelled data). With the classifier's own metrics
    off ('metrics.enabled=[clustering]', in training or evaluate.py) they were D's: other numbers under the same name."""
    from .conftest import FAST, compose_config

    datamodule, cache_dir = mnist_mini
    discriminator = instantiate(compose_config(tmp_path / "run", FAST).model.discriminator)
    digits = datamodule.split("test").images
    measured = [MetricSuite({"enabled": enabled, "figures": False}, datamodule, cache_dir).measure(digits, discriminator=discriminator)
                for enabled in (["clustering"], ["classifier", "clustering"])]
    for name in ("cluster_feat/silhouette", "cluster_feat/compactness", "cluster_feat/balance"):
        assert measured[0].scalars[name] == measured[1].scalars[name], name


def test_reference_statistics_key_follows_the_sample_count(mnist_mini, tmp_path):
    datamodule, cache_dir = mnist_mini
    load_or_train_classifier(datamodule, cache_dir)  # cached classifier, copied into the temp cache below
    import shutil

    shutil.copytree(f"{cache_dir}/classifiers", tmp_path / "classifiers")
    stats = tmp_path / "reference_stats"
    for n in (200, 200, 300):
        MetricSuite({"n_reference": n}, datamodule, tmp_path).classifier_reference()
    assert len(list(stats.glob("classifier-*.pt"))) == 2


class HeldOutDigits(GeneratorBase):
    """A generator whose samples are known: the 500 held-out real digits (50 per class) in [-1, 1], served in turn,
    or, with constant=True, one black image for every latent. Trained like any G (its only parameter gets zero
    gradients), so the metrics come through the real training path: callback, suite, loggers, metrics.csv.
    Unconditional; it replaces the whole forward pass (no trunk)."""

    def __init__(self, *, latent_dim: int, image_size: int, channels: int, constant: bool = False, **_):
        super().__init__(latent_dim=latent_dim, image_size=image_size, channels=channels)
        self.constant, self.served = constant, 0
        images, _ = mnist_mini_source(split="test")
        self.register_buffer("digits", to_float(fit_to_size(images, image_size)), persistent=False)
        self.unused = nn.Parameter(torch.zeros(()))  # G's optimizer needs a parameter

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.constant:
            images = torch.full((len(z), *self.digits.shape[1:]), -1.0, device=z.device)
        else:
            images = self.digits[(self.served + torch.arange(len(z))) % len(self.digits)]
            self.served += len(z)
        return images + 0.0 * self.unused


def evaluation_rows(run) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f) if row["classifier/fid"]]


@pytest.fixture(scope="module")
def known_generators(tmp_path_factory) -> dict[str, list[dict]]:
    """The evaluation rows of a 1-batch training run of each known generator, default metrics every epoch."""
    from .conftest import FAST, compose_config

    rows = {}
    for name, constant in (("digits", False), ("constant", True)):
        run = tmp_path_factory.mktemp(name) / "run"
        train(compose_config(run, [*FAST, "trainer.limit_train_batches=1", "metrics=default", "metrics.every_n_epochs=1",
                                   "metrics.n_samples=500", "metrics.enabled=[classifier,precision_recall,inception]", "metrics.figures=false",
                                   "model.generator._target_=tests.test_metrics_training.HeldOutDigits",
                                   f"+model.generator.constant={constant}"]))
        rows[name] = evaluation_rows(run)
    return rows


def test_metrics_during_training_of_a_generator_that_draws_real_digits(known_generators):
    [row] = known_generators["digits"]  # one evaluation: the end of the only epoch
    assert row["epoch"] == 0 and row["metrics/n_samples"] == 500
    assert 0 < row["classifier/fid"] < 10  # sampling noise only: 500 held-out digits vs the training set
    assert row["classifier/classes_covered"] == 10
    assert row["classifier/kl_uniform"] == pytest.approx(0, abs=0.01)  # 50 of each class, 96% classified right
    assert row["classifier/confidence"] > 0.9
    assert row["pr/recall"] > 0.7


def test_precision_of_real_digits_is_near_one(known_generators):
    # mnist_mini's training digits are sorted by class: the real side must be drawn from every class, not the first.
    [row] = known_generators["digits"]
    assert row["pr/precision"] > 0.7
    # Real digits are spread like the training digits: density near 1, coverage near 1 - 2^-5 (k=5).
    assert 0.8 < row["pr/density"] < 1.2 and row["pr/coverage"] > 0.9


def test_metrics_during_training_of_a_generator_that_draws_one_constant_image(known_generators):
    [row] = known_generators["constant"]
    assert row["classifier/fid"] > 300
    assert row["classifier/classes_covered"] == 1
    assert row["classifier/kl_uniform"] == pytest.approx(math.log(10))  # every sample in one class
    assert row["pr/precision"] == 0 and row["pr/recall"] == 0
    # The black image may fall inside the k=5 ball of an outlying real digit or two (here on an AMX CPU: one, not on
    # an AVX2 one): density counts the balls that hold it / k, coverage them / N = 500. Real digits: 0.8-1.2 and > 0.9.
    assert row["pr/density"] <= 2 / 5 and row["pr/coverage"] <= 2 / 500


@pytest.mark.slow  # over 10 s on 2 cores: make test-slow
def test_training_run_logs_metrics_and_writes_figures_then_evaluate_reproduces_them(make_cfg, tmp_path):
    cfg = make_cfg("metrics=default", "metrics.n_samples=200", "metrics.every_n_epochs=1",
                   "trainer.max_epochs=2", "trainer.log_every_n_steps=1")
    result = train(cfg)
    run = tmp_path / "run"
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0])
    assert set(CONTRACT) <= columns and {"loss/d", "loss/g"} <= columns
    evaluations = [r for r in rows if r["classifier/fid"]]
    assert [float(r["epoch"]) for r in evaluations] == [0.0, 1.0]  # every epoch; the end adds none (same step)
    assert all(math.isfinite(float(r[k])) for r in evaluations for k in CONTRACT)
    # The run's final metrics (status.json's) are the logged ones, digit for digit (not rounded to float32).
    assert all(result["metrics"][k] == float(evaluations[-1][k]) for k in CONTRACT)
    assert result["metrics"]["perf/wall_images_per_s"] == float([r for r in rows if r["perf/wall_images_per_s"]][-1]["perf/wall_images_per_s"])
    for tag in ("epoch0000", "epoch0001"):
        for name in ("class_histogram", "pixels_pca", "pixels_silhouette", "pixels_clusters",
                     "features_pca", "features_silhouette", "features_clusters"):
            png = run / "metrics" / f"{tag}_{name}.png"
            assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"

    # evaluate.py on the run's last checkpoint: same G, same latents -> the in-training numbers again.
    ckpt = run / "checkpoints" / "last.ckpt"
    proc = subprocess.run(
        [PYTHON, str(ROOT / "evaluate.py"), f"ckpt={ckpt}", "metrics.n_samples=200",
         f"metrics.inception_weights={tmp_path / 'no_weights.pth'}", "figures=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Inception metrics skipped" in proc.stdout + proc.stderr
    assert "classifier/fid" in proc.stdout and "run/last" in proc.stdout  # the printed table
    entry = json.loads((ckpt.parent / "metrics.json").read_text())["last.ckpt"]
    assert entry["generator"] == "generator" and entry["g_step"] == result["g_steps"] == 8
    assert entry["classifier/fid"] == pytest.approx(float(evaluations[-1]["classifier/fid"]), rel=1e-3)
    assert entry["classifier/classes_covered"] == float(evaluations[-1]["classifier/classes_covered"])
    assert len(entry["classifier/histogram"]) == 10 and sum(entry["classifier/histogram"]) == 200


@pytest.mark.slow  # 3 epochs of the default DCGAN on mnist_mini: about a minute on 2 idle cores
def test_a_briefly_trained_generator_beats_an_untrained_one_as_the_readme_table_shows(make_cfg, tmp_path):
    # The README's table compares 20 epochs with 1 G step; 3 epochs already move every number the same way.
    common = ["logger=csv", "callbacks.progress_bar=null", "metrics.n_samples=1000", "metrics.every_n_epochs=0",
              "metrics.enabled=[classifier,precision_recall,inception]", "metrics.figures=false"]
    final = {}
    for name, length in (("untrained", "trainer.max_steps=1"), ("trained", "trainer.max_epochs=3")):
        train(make_cfg(*common, length, fast=False, run_dir=tmp_path / name))
        [final[name]] = evaluation_rows(tmp_path / name)  # the evaluation at the end of training
    trained, untrained = final["trained"], final["untrained"]
    assert untrained["classifier/fid"] > 500 and trained["classifier/fid"] < untrained["classifier/fid"] / 2
    assert untrained["classifier/classes_covered"] <= 2 and trained["classifier/classes_covered"] >= 8
    # After 3 epochs the classes are near uniform: below 0.5 in fp32 (AVX2 CPUs), 0.54 in bf16 (the default on AMX).
    assert untrained["classifier/kl_uniform"] > 1.5 and trained["classifier/kl_uniform"] < 0.75


def test_evaluate_rejects_a_pattern_matching_nothing(tmp_path, capsys):
    # In process (an evaluate.py subprocess costs ~9 s of imports); main() is the CLI's own LabError-to-one-line path.
    from dcgan_lab.config import compose_run_config
    from dcgan_lab.metrics.checkpoints import main as evaluate_main

    cfg = compose_run_config(tmp_path, [f"ckpt={tmp_path}/nothing*.ckpt"], root_dir=ROOT, config_name="evaluate")
    with pytest.raises(SystemExit) as stop:
        evaluate_main(cfg)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: ckpt={tmp_path}/nothing*.ckpt matches no .ckpt file") and "\n" not in err


@pytest.mark.slow  # a sweep then evaluate.py: ~15 s
def test_evaluate_takes_the_checkpoint_of_a_sweep_job_whose_folder_is_named_by_overrides(tmp_path):
    # Hydra names a sweep job's folder by its overrides: '=' and ',' in ckpt= must stay part of the path.
    from .conftest import FAST, compose_config

    job = tmp_path / "multirun" / "ablation=hinge,seed=0"
    train(compose_config(job, FAST))
    proc = subprocess.run([PYTHON, str(ROOT / "evaluate.py"), f"ckpt={job}/checkpoints/last.ckpt", "metrics.n_samples=64",
                           "metrics.enabled=[clustering]", "figures=false", "device=cpu"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ablation=hinge,seed=0/last" in proc.stdout and "cluster/silhouette" in proc.stdout
    scores = json.loads((job / "checkpoints" / "metrics.json").read_text())["last.ckpt"]
    assert math.isfinite(scores["cluster/silhouette"]) and scores["metrics/n_samples"] == 64


def test_evaluate_labels_every_checkpoint_apart_even_when_sweep_folders_nest():
    """A job whose override held a path (paths.cache_dir=/w/.cache) nests its folder: two jobs' folders can share
    their last name, and the table would show one column for both."""
    from dcgan_lab.metrics.checkpoints import _labels

    sweep = Path("/m/2026-01-01/00-00-00")
    nested = [sweep / f"ablation={a},paths.cache_dir=" / "w" / ".cache,seed=0" / "checkpoints" / "last.ckpt"
              for a in ("baseline", "hinge")]
    assert list(_labels(nested).values()) == [f"ablation={a},paths.cache_dir=/w/.cache,seed=0/last" for a in ("baseline", "hinge")]
    plain = [sweep / f"ablation={a},seed=0" / "checkpoints" / "last.ckpt" for a in ("baseline", "hinge")]
    plain.append(Path("/elsewhere/run/epoch0004.ckpt"))
    assert list(_labels(plain).values()) == ["ablation=baseline,seed=0/last", "ablation=hinge,seed=0/last", "run/epoch0004"]


def test_loading_the_classifier_leaves_the_global_rng_alone(mnist_mini):
    # The callback loads it at fit start: a resumed or seeded GAN run must draw the same numbers with metrics on.
    datamodule, cache_dir = mnist_mini
    load_or_train_classifier(datamodule, cache_dir)
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    load_or_train_classifier(datamodule, cache_dir)
    torch.testing.assert_close(torch.rand(3), expected)


def test_metrics_of_a_progressive_generator_mid_growth(make_cfg, tmp_path):
    # After 4 batches of 16 images the progressive G still renders 4x4: metrics compare it at 32x32.
    cfg = make_cfg("model=progressive", "metrics=default", "metrics.n_samples=100", "metrics.every_n_epochs=1",
                   "metrics.figures=false", "metrics.enabled=[classifier,clustering]",
                   "trainer.log_every_n_steps=1")
    train(cfg)
    with open(tmp_path / "run" / "metrics.csv") as f:
        resolutions = {float(r["progressive/resolution"]) for r in csv.DictReader(f) if r["progressive/resolution"]}
    assert resolutions == {4.0}
    [row] = evaluation_rows(tmp_path / "run")
    # 4x4 blobs blown up to 32x32 are no digits: far from the data, in few classes, yet measured.
    assert row["classifier/fid"] > 100 and row["classifier/classes_covered"] <= 3
    assert row["classifier/kl_uniform"] > 1
    assert math.isfinite(row["cluster/silhouette"])


def test_evaluate_names_the_keys_of_a_checkpoint_that_does_not_fit_its_config(make_cfg, tmp_path):
    from dcgan_lab.errors import ConfigError
    from dcgan_lab.metrics.checkpoints import load_generator

    result = train(make_cfg())
    checkpoint = torch.load(f"{result['output_dir']}/checkpoints/last.ckpt", weights_only=False)
    checkpoint["lab_config"]["model"]["generator"]["width"] = 16  # the weights were trained with ngf=8
    tampered = tmp_path / "tampered.ckpt"
    torch.save(checkpoint, tampered)
    with pytest.raises(ConfigError, match=r"tampered.ckpt was saved from a different architecture: shape differs for ") as info:
        load_generator(tampered)
    assert "\n" not in str(info.value)


def test_evaluate_draws_the_runs_latent_walk_again_from_its_checkpoint(make_cfg, tmp_path, capsys):
    """<checkpoint>_metrics/interpolation.png: the saved G along the walk the run itself drew at its end (the run's
    own walk_rows / walk_steps, its fixed latents), pixel for pixel; a run with walk_rows=0 gets none."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dcgan_lab.metrics.checkpoints import evaluate

    from .pixels import pixels

    def evaluate_run(run) -> None:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            evaluate(compose("evaluate", overrides=[f"ckpt={run}", "metrics=none", "device=cpu", "paths.output_dir=.",
                                                    f"paths.cache_dir={tmp_path / 'cache'}"]))

    run = tmp_path / "walk"
    train(make_cfg("model.ngf=32", "trainer.limit_train_batches=20", "callbacks.sample_grid.walk_rows=3",
                   "callbacks.sample_grid.walk_steps=6", run_dir=run))
    evaluate_run(run)
    drawn_by_run, drawn_again = run / "samples/interpolation.png", run / "checkpoints/last_metrics/interpolation.png"
    shown, expected = pixels(drawn_again).astype(int), pixels(drawn_by_run).astype(int)
    assert shown.shape == expected.shape == (3 * 34 + 2, 6 * 34 + 2, 4)
    assert abs(shown - expected).max() <= 1 and (shown != expected).mean() < 0.01  # channels_last vs NCHW rounding
    assert expected[..., 0].std() > 2  # the walk is not a flat image

    off = tmp_path / "off"
    train(make_cfg("callbacks.sample_grid.walk_rows=0", run_dir=off))
    evaluate_run(off)
    assert not (off / "checkpoints/last_metrics/interpolation.png").exists()
    capsys.readouterr()


def test_evaluate_measures_each_checkpoint_on_the_latents_of_its_runs_own_metrics_seed(make_cfg, tmp_path):
    """A run that measured itself with metrics.seed=7: evaluate.py ckpt= draws those latents again (its logged numbers,
    and what the export writes), and metrics.seed=<n> on the command line chooses others."""
    from dcgan_lab.config import compose_run_config
    from dcgan_lab.metrics.checkpoints import evaluate

    measured = ["metrics.n_samples=100", "metrics.enabled=[classifier,clustering]", "metrics.figures=false"]
    train(make_cfg("metrics=default", "metrics.seed=7", *measured))
    [logged] = evaluation_rows(tmp_path / "run")

    def evaluated(*overrides: str) -> dict:
        cfg = compose_run_config(tmp_path, [f"ckpt={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}", "device=cpu", "figures=false", *measured, *overrides],
                                 root_dir=ROOT, config_name="evaluate")
        [entry] = evaluate(cfg).values()
        return entry

    again, chosen = evaluated(), evaluated("metrics.seed=0")
    for name in ("classifier/fid", "classifier/confidence", "cluster/silhouette", "cluster_feat/silhouette"):
        assert again[name] == pytest.approx(logged[name], rel=1e-9), name
    assert chosen["classifier/fid"] != pytest.approx(logged["classifier/fid"], rel=1e-9)

    # Its export (drawn with that seed) measured as images: the same numbers, clusters included (their draws too).
    from dcgan_lab.export import export_samples

    npz = export_samples(tmp_path / "run", 100, tmp_path / "samples.npz", progress=False)
    cfg = compose_run_config(tmp_path, [f"images={npz}", "dataset=mnist_mini", "device=cpu", "figures=false", *measured],
                             root_dir=ROOT, config_name="evaluate")
    [exported] = evaluate(cfg).values()
    for name in ("classifier/fid", "cluster/silhouette", "cluster/balance", "cluster_feat/silhouette", "cluster_feat/balance"):
        assert exported[name] == pytest.approx(logged[name], rel=1e-6), name
