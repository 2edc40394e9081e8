"""GANModule: G and D with manual optimization. It knows no loss, norm or dataset by name."""
from __future__ import annotations

import inspect
import math
from functools import partial
from typing import Any, Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from dcgan_lab.data.datamodule import to_float
from dcgan_lab.errors import ConfigError
from dcgan_lab.losses import feature_matching, gradient_penalty, r1_penalty
from dcgan_lab.nets.ema import ema_beta, ema_update, make_ema


class GANModule(L.LightningModule):
    """One training batch = one D step; every `n_critic`-th batch also takes one G step.

    When a G step follows, the fake batch D just saw is reused for G's update (pytorch/examples),
    so G runs forward once per batch.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss_d: Callable,
        loss_g: Callable,
        optimizer_g: Callable,
        optimizer_d: Callable,
        schedule: Callable | None = None,
        gp_weight: float = 0.0,
        r1_weight: float = 0.0,
        n_critic: int = 1,
        real_label: float = 1.0,
        fake_label: float = 0.0,
        flip_prob: float = 0.0,
        instance_noise: float = 0.0,
        instance_noise_anneal_steps: int = 0,
        grad_clip: float = 0.0,
        accumulate: int = 1,
        num_samples: int = 64,
        seed: int = 0,
        lab_config: dict | None = None,
        num_classes: int = 0,
        ema_decay: float = 0.0,
        ema_warmup_steps: int = 0,
        growth: Callable | None = None,
        augment_real: Callable | None = None,
        augment: Callable | None = None,
        feature_matching_weight: float = 0.0,
        perceptual: Callable | None = None,
        perceptual_weight: float = 0.0,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator = generator, discriminator
        self.loss_d, self.loss_g = loss_d, loss_g
        self.optimizer_g, self.optimizer_d, self.schedule = optimizer_g, optimizer_d, schedule
        self.gp_weight, self.r1_weight = gp_weight, r1_weight
        self.n_critic, self.accumulate = n_critic, accumulate
        self.real_label, self.fake_label, self.flip_prob = real_label, fake_label, flip_prob
        self.instance_noise, self.instance_noise_anneal_steps = instance_noise, instance_noise_anneal_steps
        self.grad_clip = grad_clip
        self.lab_config = lab_config
        self.uses_label_targets = (real_label, fake_label, flip_prob) != (1.0, 0.0, 0.0)
        if self.uses_label_targets and "real_target" not in inspect.signature(loss_d).parameters:
            raise ConfigError(
                "label smoothing/flipping (training.real_label, fake_label, flip_prob) needs a loss with targets "
                "(loss=bce or loss=lsgan); the chosen loss has none."
            )
        # Class-conditional models (num_classes > 0): real labels go to D, sampled labels to G and D.
        self.num_classes = num_classes
        # EMA of G's weights (contract: `generator_ema` is None when off; saved as generator_ema.* keys).
        self.ema_decay, self.ema_warmup_steps = ema_decay, ema_warmup_steps
        self.generator_ema = make_ema(generator) if ema_decay > 0 else None
        # Augmentations: `augment_real` on real images only, `augment` (DiffAugment) on everything D sees.
        self.augment_real, self.augment = augment_real, augment
        self.feature_matching_weight = feature_matching_weight
        self.perceptual, self.perceptual_weight = perceptual, perceptual_weight
        # Fixed latents: every sample grid of a run (and of its resumptions) shows the same z.
        # Conditional grids show one row per class: samples_per_class latents for each label.
        self.samples_per_class = math.ceil(num_samples / num_classes) if num_classes else 0
        if num_classes:
            num_samples = self.samples_per_class * num_classes
        fixed = torch.Generator().manual_seed(seed)
        self.register_buffer("fixed_z", torch.randn(num_samples, generator.latent_dim, generator=fixed))
        fixed_labels = torch.arange(num_classes).repeat_interleave(self.samples_per_class) if num_classes else None
        self.register_buffer("fixed_labels", fixed_labels)
        self.batches_seen = 0  # training batches over the whole run, restored on resume
        # Progressive growing: `growth(images_seen) -> (resolution, alpha)` for G, D and the EMA copy.
        self.growth, self.images_seen, self.growth_state = growth, 0, None
        self._apply_growth()

    # ---- sampling ---------------------------------------------------------------------------
    @property
    def g_step(self) -> int:
        """Generator updates so far: what GAN papers call iterations."""
        return self.batches_seen // self.n_critic

    def sample_labels(self, n: int) -> torch.Tensor | None:
        """Uniform class labels for G (None for unconditional models)."""
        return torch.randint(self.num_classes, (n,), device=self.device) if self.num_classes else None

    def _g(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.generator(z) if labels is None else self.generator(z, labels)

    def _d(self, x: torch.Tensor, labels: torch.Tensor | None, **kwargs):
        return self.discriminator(x, **kwargs) if labels is None else self.discriminator(x, labels, **kwargs)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [-1, 1] from the EMA generator when on, else G, in eval mode (BatchNorm running statistics).
        Conditional models get uniform random labels unless `labels` are given."""
        generator = self.generator_ema if self.generator_ema is not None else self.generator
        if labels is None:
            labels = self.sample_labels(len(z))
        was_training = generator.training
        generator.eval()
        try:
            z = z.to(self.device)
            return (generator(z) if labels is None else generator(z, labels.to(self.device))).float()
        finally:
            generator.train(was_training)

    # ---- progressive growing ------------------------------------------------------------------
    def _apply_growth(self) -> None:
        if self.growth is None:
            return
        resolution, alpha = self.growth(self.images_seen)
        for net in (self.generator, self.discriminator, self.generator_ema):
            if net is not None:
                net.grow(resolution, alpha)
        self.growth_state = (resolution, alpha)

    def next_growth_state(self) -> tuple[int, float] | None:
        """(resolution, alpha) the next batch will train at; None without progressive growing."""
        return self.growth(self.images_seen) if self.growth is not None else None

    # ---- the GAN step -------------------------------------------------------------------------
    def _noise_sigma(self) -> float:
        if not self.instance_noise:
            return 0.0
        if not self.instance_noise_anneal_steps:
            return self.instance_noise
        return self.instance_noise * max(0.0, 1.0 - self.g_step / self.instance_noise_anneal_steps)

    def _with_noise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        # Instance noise (Sønderby et al. 2017): blurs both distributions so their supports overlap.
        return x + sigma * torch.randn_like(x) if sigma else x

    def _label_targets(self, n: int) -> dict[str, Any]:
        if not self.uses_label_targets:
            return {}
        real = torch.full((n,), self.real_label, device=self.device)
        fake = torch.full((n,), self.fake_label, device=self.device)
        if self.flip_prob:
            flip = torch.rand(n, device=self.device) < self.flip_prob
            real, fake = torch.where(flip, fake, real), torch.where(flip, real, fake)
        return {"real_target": real, "fake_target": fake}

    def _before_d(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        # DiffAugment (differentiable, real and fake alike), then instance noise.
        return self._with_noise(self.augment(x) if self.augment is not None else x, sigma)

    def _d_loss(self, real: torch.Tensor, fake: torch.Tensor, sigma: float, real_y=None, fake_y=None):
        real, fake = self._before_d(real, sigma), self._before_d(fake, sigma)
        real_logits, fake_logits = self._d(real, real_y), self._d(fake, fake_y)
        loss = self.loss_d(real_logits, fake_logits, **self._label_targets(len(real)))
        # Penalties see D conditioned on the real labels (the interpolates of WGAN-GP included).
        critic = self.discriminator if real_y is None else partial(self.discriminator, labels=real_y)
        if self.gp_weight:
            loss = loss + self.gp_weight * gradient_penalty(critic, real, fake)
        if self.r1_weight:
            loss = loss + self.r1_weight * r1_penalty(critic, real)
        return loss, real_logits.detach(), fake_logits.detach()

    def _g_loss(self, real: torch.Tensor, fake: torch.Tensor, sigma: float, real_y=None, fake_y=None):
        seen = self._before_d(fake, sigma)
        if self.feature_matching_weight:
            fake_logits, fake_features = self._d(seen, fake_y, with_features=True)
            with torch.no_grad():
                _, real_features = self._d(self._before_d(real, sigma), real_y, with_features=True)
            loss = self.loss_g(fake_logits) + self.feature_matching_weight * feature_matching(real_features, fake_features)
        else:
            loss = self.loss_g(self._d(seen, fake_y))
        if self.perceptual_weight:
            loss = loss + self.perceptual_weight * self.perceptual(real, fake)
        return loss

    def _step(self, optimizer, network: nn.Module, name: str) -> None:
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        if self._logging_now():
            norms = [p.grad.detach().norm() for p in network.parameters() if p.grad is not None]
            self.log(f"grad_norm/{name}", torch.stack(norms).norm())
        optimizer.step()

    def log(self, name: str, value, *args, **kwargs) -> None:
        # Under DDP each rank sees other images: scalars are averaged over ranks before they are logged.
        kwargs.setdefault("sync_dist", self._trainer is not None and self.trainer.world_size > 1)
        super().log(name, value, *args, **kwargs)

    def _logging_now(self) -> bool:
        # Lightning writes step metrics after the batches where (batches so far + 1) % every == 0:
        # compute the costly extras (gradient norms) for exactly those batches.
        every = self.trainer.log_every_n_steps if self._trainer is not None else 1
        return (self.batches_seen + 1) % max(every, 1) == 0

    def training_step(self, batch, batch_idx):
        images, labels = batch
        real = to_float(images)
        if self.augment_real is not None:
            real = self.augment_real(real)
        self._apply_growth()
        if self.growth_state is not None and real.shape[-1] != self.growth_state[0]:
            real = F.adaptive_avg_pool2d(real, self.growth_state[0])  # (B, C, S, S) -> (B, C, r, r)
        opt_d, opt_g = self.optimizers()
        g_turn = (self.batches_seen + 1) % self.n_critic == 0
        chunks = real.chunk(self.accumulate)
        n_chunks = len(chunks)
        real_ys = labels.chunk(self.accumulate) if self.num_classes else [None] * n_chunks
        fake_ys = [self.sample_labels(len(c)) for c in chunks]
        reuse_fake = g_turn and n_chunks == 1
        sigma = self._noise_sigma()

        # G runs before toggling D's optimizer (which freezes G's parameters), keeping its graph
        # only when G steps on this same batch.
        with torch.set_grad_enabled(reuse_fake):
            fakes = [self._g(self.generator.sample_latent(len(c), self.device), y) for c, y in zip(chunks, fake_ys)]

        # D step: fake.detach() so D's loss does not reach G.
        self.toggle_optimizer(opt_d)
        opt_d.zero_grad(set_to_none=True)
        for chunk, fake, real_y, fake_y in zip(chunks, fakes, real_ys, fake_ys):
            loss_d, real_logits, fake_logits = self._d_loss(chunk, fake.detach(), sigma, real_y, fake_y)
            self.manual_backward(loss_d / len(chunks))
        self._step(opt_d, self.discriminator, "d")
        self.untoggle_optimizer(opt_d)
        self.log("loss/d", loss_d.detach(), prog_bar=True)
        self.log("D(x)", real_logits.mean())
        self.log("D(G(z))", fake_logits.mean())

        if g_turn:
            self.toggle_optimizer(opt_g)
            opt_g.zero_grad(set_to_none=True)
            for chunk, fake, real_y, fake_y in zip(chunks, fakes, real_ys, fake_ys):
                if not reuse_fake:
                    fake = self._g(self.generator.sample_latent(len(chunk), self.device), fake_y)
                loss_g = self._g_loss(chunk, fake, sigma, real_y, fake_y)
                self.manual_backward(loss_g / len(chunks))
            self._step(opt_g, self.generator, "g")
            self.untoggle_optimizer(opt_g)
            if self.generator_ema is not None:
                ema_update(self.generator_ema, self.generator, ema_beta(self.ema_decay, self.g_step, self.ema_warmup_steps))
            for scheduler in self._schedulers():
                scheduler.step()
            self.log("loss/g", loss_g.detach(), prog_bar=True)
        self.batches_seen += 1
        self.images_seen += len(real)
        if self.growth_state is not None:
            self.log("progressive/resolution", float(self.growth_state[0]))
            self.log("progressive/alpha", float(self.growth_state[1]))
        if sigma:
            self.log("instance_noise", sigma)
        self.log("g_step", float(self.g_step))

    def _schedulers(self) -> list:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return []
        return schedulers if isinstance(schedulers, list) else [schedulers]

    # ---- optimizers and checkpoints ----------------------------------------------------------
    def planned_g_steps(self) -> int:
        """G steps this fit will take, from max_epochs or max_steps, whichever ends first."""
        trainer = self.trainer
        trainer.estimated_stepping_batches  # makes Lightning size the dataloader
        limits = []
        if trainer.max_epochs not in (None, -1):
            limits.append(trainer.max_epochs * trainer.num_training_batches // self.n_critic)
        if trainer.max_steps not in (None, -1):
            limits.append(trainer.max_steps // (self.n_critic + 1))
        finite = [x for x in limits if math.isfinite(x)]
        return max(int(min(finite)), 1) if finite else 1

    def configure_optimizers(self):
        opt_d = self.optimizer_d(self.discriminator.parameters())
        opt_g = self.optimizer_g(self.generator.parameters())
        if self.schedule is None:
            return [opt_d, opt_g]
        total = self.planned_g_steps()
        return [opt_d, opt_g], [self.schedule(opt_d, total_steps=total), self.schedule(opt_g, total_steps=total)]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["batches_seen"] = self.batches_seen
        checkpoint["images_seen"] = self.images_seen
        if self.lab_config is not None:
            checkpoint["lab_config"] = self.lab_config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.batches_seen = checkpoint.get("batches_seen", 0)
        self.images_seen = checkpoint.get("images_seen", 0)
        self._apply_growth()  # resume at the saved phase and alpha
