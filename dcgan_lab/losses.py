"""GAN objectives as pure functions of discriminator logits, D/G pairs, plus penalties.

Conventions: `real_logits = D(x)`, `fake_logits = D(G(z))`, shape (B,). D minimises `*_d`, G minimises `*_g`.
Losses that take `real_target` / `fake_target` support label smoothing and flipping; the others do not.
A G loss that takes `real_logits` (the relativistic `ragan_g`, `ralsgan_g`) is also given D(x) of the batch, without
gradient: `def ragan_g(fake_logits, real_logits)`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_d(real_logits, fake_logits, real_target=1.0, fake_target=0.0):
    # -E[t_r log s(D(x)) + (1-t_r) log(1-s(D(x)))] - E[t_f log s(D(G(z))) + (1-t_f) log(1-s(D(G(z))))]
    return _bce(real_logits, real_target) + _bce(fake_logits, fake_target)


def bce_g(fake_logits):
    # Non-saturating (Goodfellow et al. 2014, sec. 3): -E[log s(D(G(z)))]
    return _bce(fake_logits, 1.0)


def hinge_d(real_logits, fake_logits):
    # E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]   (Lim & Ye 2017; SAGAN, BigGAN)
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g(fake_logits):
    # -E[D(G(z))]
    return -fake_logits.mean()


def wasserstein_d(real_logits, fake_logits):
    # E[D(G(z))] - E[D(x)]: the critic's estimate of -W(p_data, p_G), Lipschitz by the gradient penalty
    return fake_logits.mean() - real_logits.mean()


def wasserstein_g(fake_logits):
    # -E[D(G(z))]
    return -fake_logits.mean()


def lsgan_d(real_logits, fake_logits, real_target=1.0, fake_target=0.0):
    # 1/2 E[(D(x) - b)^2] + 1/2 E[(D(G(z)) - a)^2], a=0, b=1 (Mao et al. 2017)
    return 0.5 * (real_logits - real_target).pow(2).mean() + 0.5 * (fake_logits - fake_target).pow(2).mean()


def lsgan_g(fake_logits):
    # 1/2 E[(D(G(z)) - c)^2], c=1
    return 0.5 * (fake_logits - 1.0).pow(2).mean()


# Relativistic average losses (Jolicoeur-Martineau 2018): D judges how much more real x looks than the average
# fake, and the reverse. G's loss mirrors D's, so it has a term for the real images too (raise the fakes' mean score
# above each D(x)), which the other G losses lack. C = D's logit; the means are over the batch. Only differences of
# C count, so a shift of every output leaves both losses unchanged.
def ragan_d(real_logits, fake_logits):
    # RaSGAN: -E_x[log s(C(x) - E C(x_f))] - E_f[log(1 - s(C(x_f) - E C(x)))]   (-log s(t) = softplus(-t))
    return F.softplus(-(real_logits - fake_logits.mean())).mean() + F.softplus(fake_logits - real_logits.mean()).mean()


def ragan_g(fake_logits, real_logits):
    # -E_f[log s(C(x_f) - E C(x))] - E_x[log(1 - s(C(x) - E C(x_f)))]: D's loss with real and fake swapped
    return ragan_d(fake_logits, real_logits)


def ralsgan_d(real_logits, fake_logits):
    # RaLSGAN: E_x[(C(x) - E C(x_f) - 1)^2] + E_f[(C(x_f) - E C(x) + 1)^2]
    return ((real_logits - fake_logits.mean() - 1).pow(2).mean()
            + (fake_logits - real_logits.mean() + 1).pow(2).mean())


def ralsgan_g(fake_logits, real_logits):
    # E_f[(C(x_f) - E C(x) - 1)^2] + E_x[(C(x) - E C(x_f) + 1)^2]: D's loss with real and fake swapped
    return ralsgan_d(fake_logits, real_logits)


def _bce(logits, target):
    if not torch.is_tensor(target):
        target = torch.full_like(logits, float(target))
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))


def gradient_penalty(discriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # Gulrajani et al. 2017: E[(||grad_x D(x_hat)||_2 - 1)^2], x_hat uniformly between real and fake.
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def r1_penalty(discriminator, real: torch.Tensor) -> torch.Tensor:
    # Mescheder et al. 2018: 1/2 E[||grad_x D(x)||^2] on real data only.
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(real).sum(), real, create_graph=True)
    return 0.5 * grad.flatten(1).pow(2).sum(1).mean()


def feature_matching(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    # Salimans et al. 2016: ||E_x f(x) - E_z f(G(z))||^2 over features f (B, F), here divided by F so the
    # weight does not depend on the width of D. Real features carry no gradient.
    return (real_features.detach().mean(0) - fake_features.mean(0)).pow(2).mean()


def consistency_penalty(discriminator, images: torch.Tensor, logits: torch.Tensor, transform) -> torch.Tensor:
    # Consistency regularisation (Zhang et al. 2020; on fakes too: bCR, Zhao et al. 2021): E[(D(x) - D(T(x)))^2]
    # for a semantics-preserving T (a shift of a few pixels). `logits` = D(images), already computed by the D loss;
    # both sides carry D's gradient, as in the papers. Images carry none: the term trains D only.
    return (discriminator(transform(images.detach())) - logits).pow(2).mean()
