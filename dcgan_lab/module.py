"""GANModule: G and D with manual optimization. It knows no loss, norm or dataset by name."""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import lightning as L
import torch
from torch import nn

from dcgan_lab.data.datamodule import to_float
from dcgan_lab.errors import ConfigError
from dcgan_lab.losses import gradient_penalty, r1_penalty


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
        # Fixed latents: every sample grid of a run (and of its resumptions) shows the same z.
        fixed = torch.Generator().manual_seed(seed)
        self.register_buffer("fixed_z", torch.randn(num_samples, generator.latent_dim, generator=fixed))
        self.batches_seen = 0  # training batches over the whole run, restored on resume

    # ---- sampling ---------------------------------------------------------------------------
    @property
    def g_step(self) -> int:
        """Generator updates so far: what GAN papers call iterations."""
        return self.batches_seen // self.n_critic

    @torch.no_grad()
    def sample(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from G in eval mode (BatchNorm running statistics)."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generator(z.to(self.device)).float()
        finally:
            self.generator.train(was_training)

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

    def _d_loss(self, real: torch.Tensor, fake: torch.Tensor, sigma: float):
        real, fake = self._with_noise(real, sigma), self._with_noise(fake, sigma)
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
        loss = self.loss_d(real_logits, fake_logits, **self._label_targets(len(real)))
        if self.gp_weight:
            loss = loss + self.gp_weight * gradient_penalty(self.discriminator, real, fake)
        if self.r1_weight:
            loss = loss + self.r1_weight * r1_penalty(self.discriminator, real)
        return loss, real_logits.detach(), fake_logits.detach()

    def _step(self, optimizer, network: nn.Module, name: str) -> None:
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        if self._logging_now():
            norms = [p.grad.detach().norm() for p in network.parameters() if p.grad is not None]
            self.log(f"grad_norm/{name}", torch.stack(norms).norm())
        optimizer.step()

    def _logging_now(self) -> bool:
        every = self.trainer.log_every_n_steps if self._trainer is not None else 1
        return self.batches_seen % max(every, 1) == 0

    def training_step(self, batch, batch_idx):
        images, _labels = batch
        real = to_float(images)
        opt_d, opt_g = self.optimizers()
        g_turn = (self.batches_seen + 1) % self.n_critic == 0
        chunks = real.chunk(self.accumulate)
        reuse_fake = g_turn and len(chunks) == 1
        sigma = self._noise_sigma()

        # G runs before toggling D's optimizer (which freezes G's parameters), keeping its graph
        # only when G steps on this same batch.
        with torch.set_grad_enabled(reuse_fake):
            fakes = [self.generator(self.generator.sample_latent(len(c), self.device)) for c in chunks]

        # D step: fake.detach() so D's loss does not reach G.
        self.toggle_optimizer(opt_d)
        opt_d.zero_grad(set_to_none=True)
        for chunk, fake in zip(chunks, fakes):
            loss_d, real_logits, fake_logits = self._d_loss(chunk, fake.detach(), sigma)
            self.manual_backward(loss_d / len(chunks))
        self._step(opt_d, self.discriminator, "d")
        self.untoggle_optimizer(opt_d)
        self.log("loss/d", loss_d.detach(), prog_bar=True)
        self.log("D(x)", real_logits.mean())
        self.log("D(G(z))", fake_logits.mean())

        if g_turn:
            self.toggle_optimizer(opt_g)
            opt_g.zero_grad(set_to_none=True)
            for chunk, fake in zip(chunks, fakes):
                if not reuse_fake:
                    fake = self.generator(self.generator.sample_latent(len(chunk), self.device))
                loss_g = self.loss_g(self.discriminator(self._with_noise(fake, sigma)))
                self.manual_backward(loss_g / len(chunks))
            self._step(opt_g, self.generator, "g")
            self.untoggle_optimizer(opt_g)
            for scheduler in self._schedulers():
                scheduler.step()
            self.log("loss/g", loss_g.detach(), prog_bar=True)
        self.batches_seen += 1
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
        if self.lab_config is not None:
            checkpoint["lab_config"] = self.lab_config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.batches_seen = checkpoint.get("batches_seen", 0)
