"""The metric registry (issue 15 §2): a new metric is one entry. A toy metric registered here and chosen by
`metrics.enabled` lands in a real run's metrics.csv, the callback's log line, runs.direction and the sweep report;
unknown names are one line naming the registered ones; unmet needs skip an entry and say why."""
from __future__ import annotations

import csv
import logging

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from hydra.utils import instantiate

from dcgan_lab.errors import ConfigError
from dcgan_lab.metrics import registry
from dcgan_lab.metrics.checkpoints import load_generator
from dcgan_lab.metrics.registry import METRICS, register_metric
from dcgan_lab.metrics.suite import MetricSuite, sample_images, settings_from
from dcgan_lab.nets.generator import Generator
from dcgan_lab.pipeline import main
from dcgan_lab.report import build_report
from dcgan_lab.runs import best_values, direction, read_metrics


@pytest.fixture
def mean_brightness():
    """The whole of a new metric: one registered function (removed again after the test)."""

    @register_metric(scalars={"mean_brightness": -1}, headline=("mean_brightness",))
    def mean_brightness(ctx):
        """Mean pixel value of the generated images in [-1, 1] (a toy: darker is 'better')."""
        return {"mean_brightness": float(ctx.images.mean())}

    yield METRICS["mean_brightness"]
    del METRICS["mean_brightness"]


@pytest.fixture
def d_feature_norm():
    @register_metric(scalars={"d_feature_norm": 0}, needs=("d_features",))
    def d_feature_norm(ctx):
        return {"d_feature_norm": float(ctx.d_features().norm(dim=1).mean())}

    yield METRICS["d_feature_norm"]
    del METRICS["d_feature_norm"]


def test_a_new_metric_is_one_entry_from_config_to_csv_log_directions_and_report(make_cfg, tmp_path, caplog, mean_brightness):
    assert direction("mean_brightness") == -1
    sweep = tmp_path / "multirun"
    job = sweep / "0"
    cfg = make_cfg("metrics=default", "metrics.enabled=[clustering,mean_brightness]", "metrics.n_samples=40",
                   "metrics.pca_components=5", "metrics.figures=false", "metrics.every_n_epochs=1",
                   "trainer.max_epochs=2", run_dir=job)
    with caplog.at_level(logging.INFO, logger="dcgan_lab.callbacks.metrics"):
        main(cfg)

    with open(job / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    evaluations = [row for row in rows if row["mean_brightness"]]
    assert [float(row["epoch"]) for row in evaluations] == [0.0, 1.0]
    assert "cluster/silhouette" in rows[0] and not any(name.startswith(("classifier/", "pr/")) for name in rows[0])
    values = [float(row["mean_brightness"]) for row in evaluations]
    # The value is what the entry says: the mean of the run's last generator on the fixed metric latents.
    images, _ = sample_images(load_generator(job / "checkpoints" / "last.ckpt").generator, 40, 250, 0, "cpu")
    assert values[-1] == pytest.approx(float(images.mean()), abs=2e-3)
    assert best_values(read_metrics(job / "metrics.csv"))["mean_brightness"] == min(values)  # lower is better
    assert any("mean_brightness=" in record.getMessage() for record in caplog.records)  # the callback's headline

    (job / ".hydra").mkdir()
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=0"]))
    out = build_report(sweep)
    header = next(line for line in out["report.md"].read_text().splitlines() if line.startswith("| variant |"))
    assert "mean_brightness" in [cell.strip() for cell in header.strip("|").split("|")]
    with open(out["report.csv"]) as handle:
        assert "mean_brightness_mean" in next(csv.reader(handle))


def test_unknown_names_in_enabled_are_one_line_naming_the_registered_metrics(make_cfg, capsys, mean_brightness):
    with pytest.raises(SystemExit) as exit_info:
        main(make_cfg("metrics.enabled=[clustering,brightness]"))
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: metrics.enabled=")
    assert "'brightness'" in lines[0]
    assert all(name in lines[0] for name in ("classifier", "clustering", "inception", "precision_recall", "mean_brightness"))
    with pytest.raises(ConfigError, match="'brightness' is not among"):
        settings_from({"enabled": ["brightness"]})  # evaluate.py and direct suites: the same check


def test_an_entry_whose_needs_are_unmet_is_skipped_with_its_reason(make_cfg, tmp_path, d_feature_norm):
    datamodule = instantiate(make_cfg().dataset)
    suite = MetricSuite({"n_samples": 20, "enabled": ["d_feature_norm"]}, datamodule, tmp_path / "cache")
    alone = suite.evaluate(_tiny_generator())
    assert "d_feature_norm" not in alone.scalars
    assert "discriminator" in alone.extras["d_feature_norm_skipped"]
    discriminator = instantiate(make_cfg().model.discriminator)
    with_d = suite.evaluate(_tiny_generator(), discriminator)
    assert with_d.scalars["d_feature_norm"] > 0 and "d_feature_norm_skipped" not in with_d.extras


def _tiny_generator():
    torch.manual_seed(0)
    return Generator(latent_dim=16, image_size=32, channels=1, width=8, norm=torch.nn.BatchNorm2d, activation=torch.nn.ReLU)


def test_registering_checks_needs_directions_and_option_owners():
    with pytest.raises(ValueError, match="unknown needs"):
        register_metric(scalars={"x": 1}, needs=("gpu",))(lambda ctx: {})
    with pytest.raises(ValueError, match="must be -1, 0 or \\+1"):
        register_metric(scalars={"x": 2})(lambda ctx: {})
    with pytest.raises(ValueError, match="already belong to metric clustering"):
        register_metric("other", scalars={"x": 1}, options=("kmeans_k",))(lambda ctx: {})
    assert "other" not in METRICS and "<lambda>" not in METRICS


def test_the_builtin_directions_and_columns_come_from_the_registry():
    assert [direction(k) for k in ("classifier/fid", "cluster_feat/balance", "fid/10k", "fid/n_samples", "kid/std",
                                   "is/mean", "pr/recall", "loss/g", "train_time_s")] == [-1, 1, -1, 0, 0, 1, 1, 0, -1]
    assert registry.report_columns()[:2] == ["classifier/fid", "classifier/classes_covered"]
    assert registry.headline_keys(["pr/recall", "fid/n_samples", "fid/2k", "classifier/fid"]) == ["classifier/fid", "fid/2k", "pr/recall"]


def test_every_option_default_has_one_owner_the_yaml():
    """Each entry names its options; their defaults are conf/metrics/default.yaml's and nowhere else."""
    from dcgan_lab.metrics.suite import DEFAULTS_FILE

    # As a direct suite reads it: resolved on its own (kmeans_k's `${oc.select:dataset.kmeans_k,10}` gives 10).
    on_file = OmegaConf.to_container(OmegaConf.load(DEFAULTS_FILE), resolve=True)
    assert registry.option_names() <= set(on_file)
    assert settings_from(None) == on_file  # a direct suite gets exactly the file's values
    assert settings_from({"kmeans_k": 4})["kmeans_k"] == 4
    assert on_file["kmeans_k"] == 10


def test_a_new_metric_whose_option_has_no_default_is_one_line():
    @register_metric(scalars={"x": 1}, options=("x_bins",))
    def binned(ctx):
        return {"x": ctx.settings["x_bins"]}

    try:
        with pytest.raises(ConfigError, match=r"^metric binned reads metrics.x_bins, which has no value: give it a default in conf/metrics/default.yaml$"):
            settings_from({"enabled": ["binned"]})
        assert settings_from({"enabled": ["binned"], "x_bins": 8})["x_bins"] == 8  # given on the command line: fine
    finally:
        del METRICS["binned"]
