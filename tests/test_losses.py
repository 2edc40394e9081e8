"""Exact values of every D/G loss pair and of the penalties."""
import math

import pytest
import torch
from torch.testing import assert_close

from dcgan_lab import losses

ONES = torch.ones(4)
LOG2 = math.log(2.0)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(
    "d, g, expected_d, expected_g",
    [
        # logits of 1: hinge D = max(0, 0) + max(0, 2) = 2, G = -1
        (losses.hinge_d, losses.hinge_g, 2.0, -1.0),
        # BCE on logits: -log s(1) = softplus(-1); -log(1 - s(1)) = softplus(1)
        (losses.bce_d, losses.bce_g, softplus(-1) + softplus(1), softplus(-1)),
        (losses.wasserstein_d, losses.wasserstein_g, 0.0, -1.0),
        # 1/2 (1-1)^2 + 1/2 (1-0)^2 ; 1/2 (1-1)^2
        (losses.lsgan_d, losses.lsgan_g, 0.5, 0.0),
    ],
)
def test_losses_at_logits_one(d, g, expected_d, expected_g):
    assert_close(d(ONES, ONES), torch.tensor(expected_d))
    assert_close(g(ONES), torch.tensor(expected_g))


def test_losses_at_zero_logits_match_log2():
    zeros = torch.zeros(8)
    assert_close(losses.bce_d(zeros, zeros), torch.tensor(2 * LOG2))
    assert_close(losses.bce_g(zeros), torch.tensor(LOG2))
    assert_close(losses.hinge_d(zeros, zeros), torch.tensor(2.0))


def test_relativistic_losses_at_hand_computed_logits():
    """D(x) = [2, 4] (mean 3), D(G(z)) = [-1, 1] (mean 0): each term of Jolicoeur-Martineau's formulas by hand."""
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([-1.0, 1.0])
    sp = softplus
    # RaSGAN D: mean softplus(-(C(x) - 0)) + mean softplus(C(x_f) - 3); G: the same with real and fake swapped
    assert_close(losses.ragan_d(real, fake), torch.tensor((sp(-2) + sp(-4)) / 2 + (sp(-4) + sp(-2)) / 2))
    assert_close(losses.ragan_g(fake, real), torch.tensor((sp(4) + sp(2)) / 2 + (sp(2) + sp(4)) / 2))
    # RaLSGAN D: mean (C(x) - 0 - 1)^2 + mean (C(x_f) - 3 + 1)^2 = (1 + 9)/2 + (9 + 1)/2
    assert_close(losses.ralsgan_d(real, fake), torch.tensor(10.0))
    # G: mean (C(x_f) - 3 - 1)^2 + mean (C(x) - 0 + 1)^2 = (25 + 9)/2 + (9 + 25)/2
    assert_close(losses.ralsgan_g(fake, real), torch.tensor(34.0))
    zeros = torch.zeros(8)  # undecided D: log 2 per term, as BCE's; LSGAN's squares give 1 per term
    assert_close(losses.ragan_d(zeros, zeros), torch.tensor(2 * LOG2))
    assert_close(losses.ralsgan_g(zeros, zeros), torch.tensor(2.0))


@pytest.mark.parametrize("pair", ["ragan", "ralsgan"])
def test_relativistic_losses_judge_each_side_against_the_other_sides_mean(pair):
    """What makes them relativistic: D's gradient on a fake logit moves with the real logits, and G's loss, for the
    same fakes, changes with D(x) (BCE's G loss ignores it)."""
    d_loss, g_loss = getattr(losses, f"{pair}_d"), getattr(losses, f"{pair}_g")
    fake = torch.tensor([0.5, -0.5], requires_grad=True)
    grads = [torch.autograd.grad(d_loss(torch.tensor([r, r]), fake), fake)[0] for r in (0.0, 2.0)]
    assert (grads[0] - grads[1]).abs().min() > 1e-3
    with torch.no_grad():
        assert abs(float(g_loss(fake, torch.tensor([0.0, 0.0])) - g_loss(fake, torch.tensor([2.0, 2.0])))) > 1e-3
    # Shifting every logit by the same amount changes nothing: only differences between real and fake count.
    real = torch.tensor([1.0, 3.0])
    assert_close(d_loss(real + 5, fake + 5), d_loss(real, fake))
    assert_close(g_loss(fake - 7, real - 7), g_loss(fake, real))


def test_wasserstein_is_fake_minus_real_mean():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 0.0])
    assert_close(losses.wasserstein_d(real, fake), torch.tensor(-1.0 - 2.0))


def test_label_smoothing_targets_change_bce_and_lsgan():
    logits = torch.zeros(4)
    # With target 0.9 at logit 0, BCE is still log 2 (s(0) = 0.5 for any target).
    assert_close(losses.bce_d(logits, logits, real_target=0.9), torch.tensor(2 * LOG2))
    big = torch.full((4,), 5.0)
    expected = 0.9 * softplus(-5.0) + 0.1 * softplus(5.0)
    assert_close(losses.bce_d(big, torch.full((4,), -50.0), real_target=0.9), torch.tensor(expected), atol=1e-6, rtol=1e-5)
    assert_close(losses.lsgan_d(ONES, ONES, real_target=0.9, fake_target=0.0), torch.tensor(0.5 * 0.01 + 0.5))


def test_bce_matches_sigmoid_bce_without_overflow():
    logits = torch.tensor([-200.0, 0.0, 200.0])
    assert torch.isfinite(losses.bce_g(logits))
    assert_close(losses.bce_g(torch.tensor([0.3])), -torch.log(torch.sigmoid(torch.tensor([0.3])))[0])


class Linear(torch.nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere, so the penalties have closed forms."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w

    def forward(self, x):
        return (x.flatten(1) * self.w).sum(1)


def test_gradient_penalty_closed_form():
    w = torch.full((1 * 2 * 2,), 0.5)  # ||w|| = 1 -> penalty 0
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    assert_close(losses.gradient_penalty(Linear(w), real, fake), torch.tensor(0.0))
    assert_close(losses.gradient_penalty(Linear(2 * w), real, fake), torch.tensor(1.0))  # (2 - 1)^2


class HalfSquaredNorm(torch.nn.Module):
    """D(x) = 1/2 ||x||^2: its input gradient is x itself, so the penalty depends on where x_hat lies."""

    def forward(self, x):
        return 0.5 * x.flatten(1).pow(2).sum(1)


def test_gradient_penalty_is_taken_at_random_points_between_real_and_fake():
    # Real at distance 3 along e1, fake at distance 1 along e2: ||x_hat|| = ||(3a, 1 - a)|| for a ~ U(0, 1) per sample.
    n = 64
    real = torch.zeros(n, 1, 2, 2)
    real[:, 0, 0, 0] = 3.0
    fake = torch.zeros(n, 1, 2, 2)
    fake[:, 0, 0, 1] = 1.0
    torch.manual_seed(0)
    alpha = torch.rand(n)  # the draw gradient_penalty makes after the same seed: one alpha per sample
    expected = ((torch.sqrt((3 * alpha) ** 2 + (1 - alpha) ** 2) - 1) ** 2).mean()
    torch.manual_seed(0)
    penalty = losses.gradient_penalty(HalfSquaredNorm(), real, fake)
    assert_close(penalty, expected)  # at the real points it would be (3 - 1)^2 = 4, at the fake ones 0
    # The penalty trains D, not G: no gradient reaches the fake images.
    fake.requires_grad_(True)
    losses.gradient_penalty(HalfSquaredNorm(), real, fake).backward()
    assert fake.grad is None


def test_r1_penalty_closed_form():
    w = torch.tensor([1.0, 2.0, 2.0, 0.0])  # ||w||^2 = 9
    assert_close(losses.r1_penalty(Linear(w), torch.randn(5, 1, 2, 2)), torch.tensor(4.5))


def test_penalties_reach_discriminator_parameters():
    d = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1), torch.nn.Flatten(0))
    penalty = losses.gradient_penalty(d, torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2))
    penalty.backward()
    # create_graph=True: the penalty is differentiable w.r.t. D's weights (biases of the last layer drop out).
    assert d[1].weight.grad.abs().sum() > 0 and d[3].weight.grad.abs().sum() > 0
