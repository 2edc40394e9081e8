"""GANObjective: what D and G minimise, every regulariser and its weight, in one object built from conf/loss.

With x a real batch, G(z) a fake one, and x~ what D is shown of an image x:

    x~   = aug(x) + sigma_t * eps,  eps ~ N(0, I)          DiffAugment (augment.diff), then instance noise
                                                           (Sønderby et al. 2017), sigma_t = sigma * max(0, 1 - t/T)
    L_D  = d(D(x~), D(G(z)~); t_real, t_fake)              the loss pair's D side (conf/loss/<name>.yaml: d);
                                                           targets t_real/t_fake (label smoothing), swapped per
                                                           sample with probability flip_prob (label flipping)
         + gp_weight * E[(||grad_x D(x^)||_2 - 1)^2]       x^ = a x~ + (1 - a) G(z)~, a ~ U(0, 1) (WGAN-GP)
         + r1_weight * 1/2 E[||grad_x D(x~)||^2]           R1 on real data (Mescheder et al. 2018)
         + consistency_real_weight * E[(D(x~) - D(T(x~)))^2]          consistency regularisation (Zhang et al. 2020)
         + consistency_fake_weight * E[(D(G(z)~) - D(T(G(z)~)))^2]    on fakes too: bCR (Zhao et al. 2021); T =
                                                           consistency_augment, a random shift of a few pixels
    L_G  = g(D(G(z)~)[, D(x~)])                            the loss pair's G side; a g that takes `real_logits`
                                                           also gets D(x~), constant for G (relativistic losses)
         + feature_matching_weight * ||E f(x~) - E f(G(z)~)||^2 / F     f = D's last features (Salimans et al. 2016)
         + perceptual_weight * ||E phi(x) - E phi(G(z))||^2 / F         phi = a frozen pretrained network

t counts G steps. Penalties see D conditioned on the real labels (bCR's term on fakes: on the fakes' labels). Each
term that is on is also logged before its weight, as `penalty/<name>` (`penalty_names`): its size tells whether the
weight does anything. The module owns the optimisation loop (which batch, which network steps, accumulation,
clipping); this object owns only the numbers it minimises.
A new regulariser is one more weight and term here, plus its default in conf/config.yaml's `loss:` block.
"""
from __future__ import annotations

import inspect
from functools import partial
from typing import Callable

import torch
from torch import Tensor, nn

from dcgan_lab.config import losses_with_targets
from dcgan_lab.errors import ConfigError
from dcgan_lab.losses import consistency_penalty, feature_matching, gradient_penalty, r1_penalty


def plain_callable(fn: Callable) -> Callable:
    """A Hydra partial as a plain functools.partial of the same target and arguments.

    hydra-core 1.3.8 re-authorises a partial's target on every call (~170 us on a CPU core); the target was
    authorised when the config was instantiated, and the step calls these twice per batch.
    """
    return partial(fn.func, *fn.args, **fn.keywords) if isinstance(fn, partial) else fn


def conditioned(discriminator: nn.Module, labels: Tensor | None) -> Callable:
    """D as a function of images alone: `labels` bound for class-conditional D, D itself otherwise."""
    return discriminator if labels is None else partial(discriminator, labels=labels)


class GANObjective:
    def __init__(
        self,
        d: Callable,
        g: Callable,
        gp_weight: float = 0.0,
        r1_weight: float = 0.0,
        consistency_real_weight: float = 0.0,
        consistency_fake_weight: float = 0.0,
        consistency_augment: Callable | None = None,
        feature_matching_weight: float = 0.0,
        perceptual_weight: float = 0.0,
        perceptual: Callable | None = None,
        real_label: float = 1.0,
        fake_label: float = 0.0,
        flip_prob: float = 0.0,
        instance_noise: float = 0.0,
        instance_noise_anneal_steps: int = 0,
        augment: Callable | None = None,
    ):
        self.loss_d, self.loss_g = plain_callable(d), plain_callable(g)
        # A relativistic G loss (RaGAN: fakes judged against the real batch) names D(x) as `real_logits`.
        self.g_takes_real = "real_logits" in inspect.signature(self.loss_g).parameters
        self.gp_weight, self.r1_weight = gp_weight, r1_weight
        self.consistency_real_weight, self.consistency_fake_weight = consistency_real_weight, consistency_fake_weight
        self.consistency_augment = consistency_augment
        if (consistency_real_weight or consistency_fake_weight) and consistency_augment is None:
            raise ConfigError("loss.consistency_real_weight / consistency_fake_weight need a transform T to be "
                              "consistent under: set loss.consistency_augment (conf/config.yaml's default shifts by "
                              "up to 4 pixels), or set both weights to 0.")
        self.feature_matching_weight = feature_matching_weight
        # `perceptual` is a factory (it loads a frozen network from disk): built only when the term is on.
        self.perceptual_weight = perceptual_weight
        self.perceptual = perceptual() if perceptual_weight and perceptual is not None else None
        self.real_label, self.fake_label, self.flip_prob = real_label, fake_label, flip_prob
        self.uses_label_targets = (real_label, fake_label, flip_prob) != (1.0, 0.0, 0.0)
        if self.uses_label_targets and "real_target" not in inspect.signature(self.loss_d).parameters:
            d_name = getattr(getattr(self.loss_d, "func", self.loss_d), "__name__", "the chosen one")
            raise ConfigError(
                "label smoothing/flipping (training.real_label, fake_label, flip_prob) needs a loss with targets "
                f"({' or '.join(losses_with_targets())}); the chosen loss's D loss, {d_name}, has none."
            )
        self.instance_noise, self.instance_noise_anneal_steps = instance_noise, instance_noise_anneal_steps
        self.augment = augment

    @property
    def penalty_names(self) -> dict[str, list[str]]:
        """The scalars d_loss ("d") and g_loss ("g") log beside the losses: each term that is on, before its weight."""
        on = lambda terms: [f"penalty/{name}" for name, weight in terms if weight]  # noqa: E731
        return {"d": on([("gradient", self.gp_weight), ("r1", self.r1_weight),
                         ("consistency_real", self.consistency_real_weight),
                         ("consistency_fake", self.consistency_fake_weight)]),
                "g": on([("feature_matching", self.feature_matching_weight),
                         ("perceptual", self.perceptual is not None)])}

    def caveats(self, discriminator: nn.Module) -> list[str]:
        """What this objective's own assumptions say about the chosen D: lines to warn with, not errors (a user
        may run the combination on purpose, as an ablation)."""
        batch_norms = [m for m in discriminator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        penalties = [f"loss.{name}={weight:g}" for name, weight in (("gp_weight", self.gp_weight), ("r1_weight", self.r1_weight))
                     if weight]
        if not (batch_norms and penalties):
            return []
        # The penalties constrain grad_x D(x) per sample; under BatchNorm in training mode D(x_i) depends on every
        # image of the batch, so that gradient is not the per-sample one the penalty assumes.
        return [f"{' and '.join(penalties)} with BatchNorm in D: the penalty is on each sample's gradient, but "
                "BatchNorm makes each D output depend on the whole batch (Gulrajani et al. 2017, section 4, use no "
                "BatchNorm in the critic); experiment=wgan_gp uses LayerNorm in D "
                "(norm.d._target_=dcgan_lab.nets.blocks.layer_norm)"]

    # ---- what D sees ---------------------------------------------------------------------------
    def noise_sigma(self, g_step: int) -> float:
        """Instance-noise std at this G step (0 when off or fully annealed)."""
        if not self.instance_noise:
            return 0.0
        if not self.instance_noise_anneal_steps:
            return self.instance_noise
        return self.instance_noise * max(0.0, 1.0 - g_step / self.instance_noise_anneal_steps)

    def seen_by_d(self, images: Tensor, sigma: float | Tensor) -> Tensor:
        images = self.augment(images) if self.augment is not None else images
        # A tensor sigma (a captured step's buffer) always draws: its value is only known on the device.
        return images + sigma * torch.randn_like(images) if isinstance(sigma, Tensor) or sigma else images

    def _label_targets(self, n: int, device) -> dict[str, Tensor]:
        if not self.uses_label_targets:
            return {}
        real = torch.full((n,), self.real_label, device=device)
        fake = torch.full((n,), self.fake_label, device=device)
        if self.flip_prob:
            flip = torch.rand(n, device=device) < self.flip_prob
            real, fake = torch.where(flip, fake, real), torch.where(flip, real, fake)
        return {"real_target": real, "fake_target": fake}

    # ---- the two losses ------------------------------------------------------------------------
    def d_loss(self, discriminator: nn.Module, real: Tensor, fake: Tensor, real_labels: Tensor | None,
               fake_labels: Tensor | None, g_step: int, sigma: float | Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """L_D for one (micro-)batch and the detached scalars to log (D(x), D(G(z)) means, each penalty before its
        weight). `fake` is detached.
        `sigma` overrides the instance-noise std of G step `g_step` (a captured step passes a device buffer)."""
        sigma = self.noise_sigma(g_step) if sigma is None else sigma
        real, fake = self.seen_by_d(real, sigma), self.seen_by_d(fake.detach(), sigma)
        critic, fake_critic = conditioned(discriminator, real_labels), conditioned(discriminator, fake_labels)
        real_logits, fake_logits = critic(real), fake_critic(fake)
        loss = self.loss_d(real_logits, fake_logits, **self._label_targets(len(real), real.device))
        stats = {"D(x)": real_logits.detach().mean(), "D(G(z))": fake_logits.detach().mean()}
        penalties = {}
        if self.gp_weight:
            penalties["gradient"] = (self.gp_weight, gradient_penalty(critic, real, fake))
        if self.r1_weight:
            penalties["r1"] = (self.r1_weight, r1_penalty(critic, real))
        if self.consistency_real_weight:
            penalties["consistency_real"] = (self.consistency_real_weight,
                                             consistency_penalty(critic, real, real_logits, self.consistency_augment))
        if self.consistency_fake_weight:
            penalties["consistency_fake"] = (
                self.consistency_fake_weight, consistency_penalty(fake_critic, fake, fake_logits, self.consistency_augment))
        return self._add(loss, penalties, stats)

    @staticmethod
    def _add(loss: Tensor, penalties: dict[str, tuple[float, Tensor]], stats: dict) -> tuple[Tensor, dict[str, Tensor]]:
        """loss + each weight * penalty; the penalties, detached and before their weights, join the scalars to log."""
        for name, (weight, value) in penalties.items():
            loss = loss + weight * value
            stats[f"penalty/{name}"] = value.detach()
        return loss, stats

    def g_loss(self, discriminator: nn.Module, real: Tensor, fake: Tensor, real_labels: Tensor | None,
               fake_labels: Tensor | None, g_step: int, sigma: float | Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """L_G for one (micro-)batch and its penalties to log, as d_loss; gradients flow into G through `fake`.
        `sigma` as in d_loss."""
        sigma = self.noise_sigma(g_step) if sigma is None else sigma
        seen = self.seen_by_d(fake, sigma)
        on_fakes = conditioned(discriminator, fake_labels)
        penalties = {}
        if self.feature_matching_weight:
            fake_logits, fake_features = on_fakes(seen, with_features=True)
            with torch.no_grad():
                real_logits, real_features = conditioned(discriminator, real_labels)(self.seen_by_d(real, sigma),
                                                                                     with_features=True)
            with_real = {"real_logits": real_logits} if self.g_takes_real else {}
            penalties["feature_matching"] = (self.feature_matching_weight,
                                             feature_matching(real_features, fake_features))
        else:
            fake_logits, with_real = on_fakes(seen), {}
            if self.g_takes_real:
                with torch.no_grad():
                    with_real["real_logits"] = conditioned(discriminator, real_labels)(self.seen_by_d(real, sigma))
        if self.perceptual is not None:
            penalties["perceptual"] = (self.perceptual_weight, self.perceptual(real, fake))
        return self._add(self.loss_g(fake_logits, **with_real), penalties, {})
