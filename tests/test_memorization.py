"""The memorization metric on generators whose answer is known, through the MetricSuite as a run's evaluation
runs it: one that hands out training images (a perfect memoriser), one that hands out real digits it never
trained on (what a G that generalises should look like), and one that draws noise."""
from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from dcgan_lab.data.datamodule import to_float
from dcgan_lab.metrics import MetricSuite
from dcgan_lab.metrics.suite import ImageSubset

from .pixels import pixels

N = 400


class ImageBank(nn.Module):
    """A stand-in generator: each call returns the next len(z) of its images (in [-1, 1]), whatever z is."""

    latent_dim = 8

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.register_buffer("images", images)
        self.drawn = 0

    def forward(self, z):
        batch = self.images[self.drawn : self.drawn + len(z)]
        self.drawn += len(z)
        return batch


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    from .conftest import compose_config

    cfg = compose_config(tmp_path_factory.mktemp("run"), ["logger=csv"])
    settings = {"enabled": ["memorization"], "n_samples": N, "batch_size": 128}
    return MetricSuite(settings, instantiate(cfg.dataset), tmp_path_factory.mktemp("cache"))


def test_a_generator_that_hands_out_training_images_copies_every_time(suite, tmp_path):
    reference, held_out = suite.copy_reference(N)
    assert len(held_out) == N and len(reference) == 4500 - N  # mnist_mini: 4,500 training digits
    assert reference[:].dtype == held_out.dtype == torch.uint8
    train = suite.datamodule.split("train").images
    assert reference.images is train  # a view of the training images, gathered when read
    # Every held-out image is a training image, and none of them is in the reference.
    train, ref_rows, held_rows = (x.flatten(1) for x in (train, reference[:], held_out))
    assert (torch.cdist(held_rows.float(), train.float()).min(1).values == 0).all()
    assert (torch.cdist(held_rows.float(), ref_rows.float()).min(1).values > 0).all()
    report = suite.evaluate(ImageBank(to_float(reference[:N])), figures_dir=tmp_path)
    assert report.scalars["memorization/copies"] == 1.0
    assert report.scalars["memorization/nn_ratio"] < 0.01  # 0 up to cdist's round-off
    assert report.scalars["memorization/ct"] < -10  # every cell: samples far nearer than new data (Z scores)
    # The figure: each row a sample, then its nearest training images; a copy's nearest is its original.
    grid = pixels(tmp_path / "nearest_training_images.png")[..., 0]
    assert grid.shape == (8 * 34 + 2, 6 * 34 + 2)
    first_row = [grid[2:34, 2 + 34 * c: 34 + 34 * c] for c in range(6)]
    assert (first_row[0] == first_row[1]).all() and first_row[0].std() > 20  # a digit and its original
    assert not (first_row[1] == first_row[2]).all()


def test_real_digits_it_never_trained_on_fall_as_near_as_held_out_ones(suite):
    unseen = to_float(suite.datamodule.split("test").images[:N])
    scalars = suite.evaluate(ImageBank(unseen)).scalars
    # 1% of held-out digits fall below the copy threshold; of 400 new digits, 4 +- 2 should.
    assert 0 <= scalars["memorization/copies"] <= 0.03
    assert 0.85 < scalars["memorization/nn_ratio"] < 1.2
    assert abs(scalars["memorization/ct"]) < 2  # no cell tells new digits from held-out ones


def test_noise_is_far_from_every_training_image(suite):
    noise = torch.rand(N, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scalars = suite.evaluate(ImageBank(noise)).scalars
    assert scalars["memorization/copies"] == 0.0 and scalars["memorization/nn_ratio"] > 2
    assert scalars["memorization/ct"] > 5  # at most sqrt(3 n m / (n + m + 1)) in the one cell noise falls into


def test_the_cell_test_weighs_each_cells_z_score_by_its_held_out_share():
    """Meehan et al.'s C_T from distances and cells given by hand, against the closed form."""
    from dcgan_lab.metrics.memorization import data_copying_z

    # One cell, two of each: every generated distance below every held-out one, U = 0.
    z = data_copying_z(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.zeros(2, dtype=torch.long),
                       torch.zeros(2, dtype=torch.long), min_per_cell=1)
    assert z == pytest.approx(-2 / (4 * 5 / 12) ** 0.5)
    # Cell 0 copies (distance 0), cell 1 draws like the data; cell 0 holds 3/4 of the held-out images.
    g = torch.Generator().manual_seed(0)
    real = torch.rand(400, generator=g) + 0.5
    real_cell = (torch.arange(400) >= 300).long()
    fake = torch.cat([torch.zeros(50), torch.rand(50, generator=g) + 0.5])
    fake_cell = (torch.arange(100) >= 50).long()
    z_copying = (0 - 50 * 300 / 2) / (50 * 300 * 351 / 12) ** 0.5
    z_fair = data_copying_z(fake[50:], real[300:], fake_cell[50:], real_cell[300:])
    assert abs(z_fair) < 3
    assert data_copying_z(fake, real, fake_cell, real_cell) == pytest.approx(0.75 * z_copying + 0.25 * z_fair)
    # A cell with fewer than min_per_cell generated images is left out; with none left, one cell of everything.
    assert data_copying_z(fake[40:], real, fake_cell[40:], real_cell) == pytest.approx(z_fair)
    alone = data_copying_z(fake[:5], real, fake_cell[:5], real_cell)
    assert alone == pytest.approx((0 - 5 * 400 / 2) / (5 * 400 * 406 / 12) ** 0.5)


@pytest.mark.parametrize("chunk", [7, 64, 4096])
def test_nearest_over_chunks_of_a_uint8_support_is_the_whole_search(chunk):
    from dcgan_lab.metrics.memorization import nearest

    g = torch.Generator().manual_seed(0)
    support = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8, generator=g)
    queries = torch.rand(9, 1, 4, 4, generator=g) * 2 - 1
    distances, indices = nearest(queries, support, k=3, chunk=chunk)
    expected = torch.cdist(queries.flatten(1), to_float(support).flatten(1)).topk(3, dim=1, largest=False)
    torch.testing.assert_close(distances, expected.values)
    assert torch.equal(indices, expected.indices)
    # The same support as a view into a larger set (how the suite hands out its reference): the same answer.
    larger = torch.cat([torch.zeros(30, 1, 4, 4, dtype=torch.uint8), support])
    view = ImageSubset(larger, torch.arange(30, 80))
    distances_view, indices_view = nearest(queries, view, k=3, chunk=chunk)
    assert torch.equal(distances_view, distances) and torch.equal(indices_view, indices)


def test_large_images_are_compared_at_64_pixels_and_a_copy_is_still_a_copy():
    from dcgan_lab.metrics.memorization import copy_study, nearest

    g = torch.Generator().manual_seed(1)
    reference = torch.randint(0, 256, (40, 3, 128, 128), dtype=torch.uint8, generator=g)
    held_out = torch.randint(0, 256, (20, 3, 128, 128), dtype=torch.uint8, generator=g)
    queries = to_float(reference[:5]) + 0.05 * torch.randn(5, 3, 128, 128, generator=g)  # near-copies
    distances, indices = nearest(queries, reference, k=2)
    # The same search on images area-averaged to 64x64 by hand.
    pooled = [torch.nn.functional.avg_pool2d(x, 2).flatten(1) for x in (queries, to_float(reference))]
    expected = torch.cdist(*pooled).topk(2, dim=1, largest=False)
    torch.testing.assert_close(distances, expected.values)
    assert torch.equal(indices[:, 0], torch.arange(5))
    study = copy_study(queries, reference, held_out)
    assert study["copies"] == 1.0 and study["nn_ratio"] < 0.1
