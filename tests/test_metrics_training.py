"""The metrics classifier, the metric callback inside a real training run, and evaluate.py on its checkpoint.

The classifier is trained once into the repo's .cache (as a user's first run would) and reused afterwards.
"""
from __future__ import annotations

import csv
import json
import math
import subprocess

import pytest
import torch
from hydra.utils import instantiate

from dcgan_lab.metrics import MetricSuite, mode_metrics
from dcgan_lab.metrics.classifier import classify, load_or_train_classifier
from dcgan_lab.pipeline import train

from .conftest import PYTHON, ROOT

CONTRACT = [
    "classifier/fid", "classifier/classes_covered", "classifier/kl_uniform", "classifier/confidence",
    "cluster/silhouette", "cluster/compactness", "cluster/balance",
    "cluster_feat/silhouette", "cluster_feat/compactness", "cluster_feat/balance",
    "pr/precision", "pr/recall",
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


def test_reference_statistics_key_follows_the_sample_count(mnist_mini, tmp_path):
    datamodule, cache_dir = mnist_mini
    load_or_train_classifier(datamodule, cache_dir)  # cached classifier, copied into the temp cache below
    import shutil

    shutil.copytree(f"{cache_dir}/classifiers", tmp_path / "classifiers")
    stats = tmp_path / "reference_stats"
    for n in (200, 200, 300):
        MetricSuite({"n_reference": n}, datamodule, tmp_path).classifier_reference()
    assert len(list(stats.glob("classifier-*.pt"))) == 2


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
    assert result["metrics"]["classifier/fid"] == pytest.approx(float(evaluations[-1]["classifier/fid"]))
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


def test_evaluate_rejects_a_pattern_matching_nothing(tmp_path):
    proc = subprocess.run([PYTHON, str(ROOT / "evaluate.py"), f"ckpt={tmp_path}/nothing*.ckpt"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ckpt=") and "matches no .ckpt file" in proc.stderr


def test_loading_the_classifier_leaves_the_global_rng_alone(mnist_mini):
    # The callback loads it at fit start: a resumed or seeded GAN run must draw the same numbers with metrics on.
    datamodule, cache_dir = mnist_mini
    load_or_train_classifier(datamodule, cache_dir)
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    load_or_train_classifier(datamodule, cache_dir)
    torch.testing.assert_close(torch.rand(3), expected)


def test_metrics_of_a_progressive_generator_mid_growth(make_cfg):
    # After 4 batches of 16 images the progressive G still renders 4x4: metrics compare it at 32x32.
    cfg = make_cfg("model=progressive", "metrics=default", "metrics.n_samples=100", "metrics.every_n_epochs=1",
                   "metrics.figures=false", "metrics.enabled=[classifier,clustering]")
    result = train(cfg)
    assert result["metrics"]["classifier/classes_covered"] >= 1
    assert math.isfinite(result["metrics"]["cluster/silhouette"])


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
