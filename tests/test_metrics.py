"""Metric building blocks: Fréchet distance, mode metrics, precision/recall, the reference cache (the Inception
path: tests/test_inception.py)."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch.testing import assert_close

from dcgan_lab.errors import ConfigError
from dcgan_lab.metrics import (MetricSuite, ReferenceCache, density_coverage, frechet_distance, gaussian_stats, mode_metrics,
                               precision_recall)
from dcgan_lab.metrics.inception import protocol_name


def scipy_frechet(x1: np.ndarray, x2: np.ndarray) -> float:
    mu1, mu2 = x1.mean(0), x2.mean(0)
    s1, s2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_distance_matches_scipy_sqrtm_on_random_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(600, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(loc=0.5, size=(700, 16)) @ rng.normal(size=(16, 16))
    ours = frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    assert ours == pytest.approx(scipy_frechet(a, b), rel=1e-7)
    assert frechet_distance(*gaussian_stats(a), *gaussian_stats(a)) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_closed_form_for_diagonal_covariances():
    # Commuting (diagonal) covariances: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 16.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 4) ** 2
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_mode_metrics_all_one_class_and_balanced():
    one_class = torch.zeros(200, 10)
    one_class[:, 3] = 1.0
    m = mode_metrics(one_class)
    assert m["classes_covered"] == 1
    assert m["kl_uniform"] == pytest.approx(math.log(10), rel=1e-12)
    assert m["confidence"] == pytest.approx(1.0)
    assert m["histogram"] == [0, 0, 0, 200, 0, 0, 0, 0, 0, 0]

    balanced = torch.nn.functional.one_hot(torch.arange(200) % 10, 10).float() * 0.8 + 0.02
    m = mode_metrics(balanced)
    assert m["classes_covered"] == 10
    assert m["kl_uniform"] == pytest.approx(0.0, abs=1e-12)
    assert m["confidence"] == pytest.approx(0.82)


def test_mode_metrics_coverage_threshold_ignores_stray_samples():
    labels = torch.cat([torch.zeros(995, dtype=torch.long), torch.tensor([1, 2, 3, 4, 5])])
    m = mode_metrics(torch.nn.functional.one_hot(labels, 10).float(), coverage_threshold=0.1)
    assert m["classes_covered"] == 1  # 1 sample < 0.1 * 1000 / 10
    assert mode_metrics(torch.nn.functional.one_hot(labels, 10).float(), coverage_threshold=0.01)["classes_covered"] == 6


def test_precision_recall_identical_and_disjoint_sets():
    x = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x.clone(), k=3) == {"precision": 1.0, "recall": 1.0}
    assert precision_recall(x, x + 100.0, k=3) == {"precision": 0.0, "recall": 0.0}
    # Half the fakes collapse onto one real point: all inside the real manifold, but they cover little of it.
    collapsed = x[:1].repeat(300, 1)
    result = precision_recall(x, collapsed, k=3)
    assert result["precision"] == 1.0
    assert result["recall"] == pytest.approx(1 / 300)


@pytest.mark.parametrize("k, expected", [(1, 0.5), (2, 0.75), (3, 0.75)])
def test_precision_recall_by_hand_on_a_line(k, expected):
    # Real points 0, 1, 3, 7. The radius of each is the distance to its k-th nearest other real point:
    #   k=1: 1, 1, 2, 4   -> balls [-1,1] [0,2] [1,5] [3,11]
    #   k=2: 3, 2, 3, 6   -> balls [-3,3] [-1,3] [0,6] [1,13]
    #   k=3: 7, 6, 4, 7   -> balls [-7,7] [-5,7] [-1,7] [0,14]
    # Fakes 2, 11, 12, 20: 2 is inside for every k, 11 on the rim of 7's ball at k=1 (|11 - 7| = 4: inside, as in
    # the paper's <=), 12 inside from k=2 on, 20 never. Precision = 2/4, 3/4, 3/4.
    real = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    fake = torch.tensor([[2.0], [11.0], [12.0], [20.0]])
    assert precision_recall(real, fake, k=k) == {"precision": expected, "recall": 1.0}  # each real point sits in a fake ball
    # Recall is precision with the roles swapped: the fakes' manifold now has the radii above.
    assert precision_recall(fake, real, k=k) == {"precision": 1.0, "recall": expected}


@pytest.mark.parametrize("k, density, coverage", [(1, 0.75, 0.75), (2, 0.75, 1.0), (3, 0.5, 1.0)])
def test_density_and_coverage_by_hand_on_a_line(k, density, coverage):
    # The real balls of the test above. Fakes 2, 11, 12, 20 lie in how many of them?
    #   k=1 (radii 1, 1, 2, 4):  2 in the balls of 1 and 3; 11 in 7's (rim); 12, 20 in none -> 3 / (1 * 4)
    #   k=2 (radii 3, 2, 3, 6):  2 in all four; 11 and 12 in 7's; 20 in none            -> 6 / (2 * 4)
    #   k=3 (radii 7, 6, 4, 7):  2 in all four; 11 and 12 in 7's; 20 in none            -> 6 / (3 * 4)
    # Coverage: a real ball holds a fake unless its centre's nearest fake is farther than its radius: at k=1,
    # 0's nearest fake (2) is 2 away, radius 1; at k=2 and 3 every ball holds one.
    real = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    fake = torch.tensor([[2.0], [11.0], [12.0], [20.0]])
    assert density_coverage(real, fake, k=k) == {"density": density, "coverage": coverage}


@pytest.mark.parametrize("k", [3, 5])
def test_precision_recall_density_coverage_equal_the_authors_package(k, capsys):
    import prdc  # a [dev] dependency: Naeem et al.'s own implementation (NAVER, MIT)
    g = torch.Generator().manual_seed(k)
    real = torch.randn(600, 16, generator=g, dtype=torch.float64)
    fake = 0.8 * torch.randn(500, 16, generator=g, dtype=torch.float64) + 0.3  # narrower and shifted: every value < 1
    theirs = prdc.compute_prdc(real.numpy(), fake.numpy(), nearest_k=k)
    ours = {**precision_recall(real, fake, k=k), **density_coverage(real, fake, k=k)}
    assert ours == pytest.approx({name: float(value) for name, value in theirs.items()}, abs=1e-12)
    assert 0.1 < ours["coverage"] < 0.95 and 0.1 < ours["recall"] < 0.95 and ours["density"] != ours["precision"]


def test_density_and_coverage_see_through_a_real_outlier_that_fools_precision():
    # Naeem et al.'s point: one real outlier's ball is wide, and fakes gathered around it are all "inside" it.
    g = torch.Generator().manual_seed(0)
    outlier = torch.zeros(1, 8)
    outlier[0, 0] = 30.0
    real = torch.cat([torch.randn(1000, 8, generator=g), outlier])
    fake = outlier + 0.5 * torch.randn(500, 8, generator=g)
    assert precision_recall(real, fake, k=3)["precision"] == 1.0
    # Each fake lies in that one ball of 1001: density 1/k; one real ball of 1001 holds fakes.
    assert density_coverage(real, fake, k=5) == {"density": pytest.approx(1 / 5), "coverage": pytest.approx(1 / 1001)}


def test_density_and_coverage_of_fakes_drawn_like_the_reals():
    # Expected values: density 1 (a real ball holds k/N of the mass on average); coverage 1 - P(the k nearest of
    # the other 2N - 1 samples to a real one are all real) = 1 - prod_j (N - 1 - j) / (2N - 1 - j), about 1 - 2^-k.
    g = torch.Generator().manual_seed(1)
    n, k = 2000, 5
    real, fake = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    result = density_coverage(real, fake, k=k)
    expected_coverage = 1 - math.prod((n - 1 - j) / (2 * n - 1 - j) for j in range(k))
    assert result["density"] == pytest.approx(1.0, abs=0.05)
    assert result["coverage"] == pytest.approx(expected_coverage, abs=0.015)
    # Half the modes dropped: fakes only where the first coordinate is positive.
    half = fake[fake[:, 0] > 0]
    dropped = density_coverage(real, half, k=k)
    assert dropped["coverage"] < 0.6 and dropped["density"] == pytest.approx(1.0, abs=0.1)


def test_density_coverage_needs_more_samples_than_k():
    with pytest.raises(ValueError, match="more than k=5 samples per set, got 5 real, 9 fake"):
        density_coverage(torch.zeros(5, 2), torch.zeros(9, 2), k=5)


def test_reference_cache_hits_on_second_call_and_misses_when_the_key_changes(tmp_path):
    cache = ReferenceCache(tmp_path)
    calls = []

    def compute(value):
        def run():
            calls.append(value)
            return {"mu": np.full(3, value)}
        return run

    key = {"what": "classifier", "dataset": "mnist_mini", "n_reference": 100}
    first = cache.get(key, compute(1.0))
    second = cache.get(key, compute(2.0))
    assert calls == [1.0]
    assert_close(second["mu"], first["mu"])
    changed = cache.get({**key, "n_reference": 200}, compute(3.0))
    assert calls == [1.0, 3.0]
    assert_close(changed["mu"], np.full(3, 3.0))
    files = sorted(p.name for p in (tmp_path / "reference_stats").iterdir())
    assert len(files) == 2 and all(f.startswith("classifier-") and f.endswith(".pt") for f in files)  # no temp files left


def test_protocol_name_carries_the_sample_count():
    assert [protocol_name(n) for n in (10000, 50000, 1500, 1000, 500, 1234)] == ["10k", "50k", "1.5k", "1k", "500", "1234"]


def test_bad_metric_settings_raise_one_clear_line():
    with pytest.raises(ConfigError, match="metrics.n_samples=0"):
        MetricSuite({"n_samples": 0}, datamodule=None, cache_dir=".")
    with pytest.raises(ConfigError, match="unknown metrics option"):
        MetricSuite({"n_sample": 10}, datamodule=None, cache_dir=".")
    with pytest.raises(ConfigError, match="inception_during_training"):
        MetricSuite({"inception_during_training": "sometimes"}, datamodule=None, cache_dir=".")


@pytest.mark.parametrize("given, named", [({"n_samples": 8}, "metrics.kmeans_k=10"),
                                          ({"n_samples": 40, "dc_k": 50}, "metrics.dc_k=50")])
def test_too_few_samples_for_a_k_is_one_line_naming_that_k(given, named):
    from dcgan_lab.metrics import settings_from

    with pytest.raises(ConfigError, match=f"metrics.n_samples={given['n_samples']} is too small: use more than {named}"):
        settings_from(given)


@pytest.mark.parametrize("latent_dim", [100, 7])
def test_the_first_n_latents_of_a_larger_draw_are_the_n_drawn_alone(latent_dim):
    """An evaluation with Inception draws inception_n_samples latents and measures the other metrics on the first
    n_samples of them; evaluations without it, evaluate.py and the export draw n_samples: the same latents."""
    from types import SimpleNamespace

    from dcgan_lab.metrics.suite import sample_latents

    generator = SimpleNamespace(latent_dim=latent_dim, num_classes=0)
    for n, more in ((150, 152), (500, 2048), (1, 3000)):
        assert torch.equal(sample_latents(generator, more, 0)[0][:n], sample_latents(generator, n, 0)[0])
    # Where one torch.randn call already had that property (n * d a multiple of 16), the latents are the ones it drew.
    assert torch.equal(sample_latents(generator, 2000, 3)[0], torch.randn(2000, latent_dim, generator=torch.Generator().manual_seed(3)))


def test_a_collapsed_generator_has_balance_zero_not_minus_zero():
    """All samples in one cluster: balance is 0.0, which metrics.csv and the report print as 0.0, not -0.0."""
    from dcgan_lab.metrics.clustering import cluster_study

    same = torch.zeros(50, 16)
    result = cluster_study(same, k=5, pca_components=None)
    assert result.balance == 0.0 and math.copysign(1.0, result.balance) == 1.0


def test_a_collapsed_generator_is_one_lab_line_not_sklearns_warning(caplog, recwarn):
    """Fewer distinct samples than clusters: the user reads that G collapsed, not a ConvergenceWarning about
    'duplicate points in X' from inside KMeans; distinct samples raise neither."""
    from dcgan_lab.metrics.clustering import cluster_study

    two_points = torch.cat([torch.zeros(30, 16), torch.ones(20, 16)])
    with caplog.at_level(logging.INFO, logger="dcgan_lab.metrics.clustering"):
        result = cluster_study(two_points, k=5, pca_components=None)
    assert [str(w.message) for w in recwarn] == []
    assert [r.getMessage() for r in caplog.records] == [
        "cluster study: the 50 samples are only 2 distinct point(s), fewer than k=5: "
        "the generator has collapsed (balance and silhouette near 0)"]
    assert sorted(np.bincount(result.labels)[np.bincount(result.labels) > 0]) == [20, 30]

    caplog.clear()
    cluster_study(torch.randn(50, 16, generator=torch.Generator().manual_seed(0)), k=5, pca_components=None)
    assert caplog.records == [] and [str(w.message) for w in recwarn] == []
