"""GANModule: the optimisation loop around G, D and a GANObjective. It knows no loss, norm or dataset by name."""
from __future__ import annotations

import logging
import math
import time
from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcgan_lab.captured import WARMUP_BATCHES, StaticStep, capture_blockers, portable_optimizer_states
from dcgan_lab.checkpoint_io import apply_optimizer_settings, optimizer_setting_changes
from dcgan_lab.nets.contract import evaluating
from dcgan_lab.nets.ema import EmaSchedule, ema_update, make_ema, sampling_generator
from dcgan_lab.objective import GANObjective

log = logging.getLogger(__name__)


def add_micro_batch(logs: dict[str, Tensor], scalars: dict[str, Tensor], n_chunks: int) -> None:
    """Adds one micro-batch's scalars to `logs`, which ends as the whole batch's mean over its micro-batches."""
    for name, value in scalars.items():
        logs[name] = logs.get(name, 0) + value / n_chunks


class GANModule(L.LightningModule):
    """One training batch = one D step; every `n_critic`-th batch also takes one G step.

    When a G step follows, the fake batch D just saw is reused for G's update (pytorch/examples), so G runs
    forward once per batch. Batches arrive as float images in [-1, 1] (the datamodule converts and augments
    them on the device). Nothing in the step reads a device value on the host: logged scalars stay on the
    device and are handed to Lightning only on the batches it writes (`trainer.log_every_n_steps`).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        objective: GANObjective,
        optimizer_g: Callable,
        optimizer_d: Callable,
        schedule: Callable | None = None,
        ema: EmaSchedule | None = None,
        growth: Callable | None = None,
        n_critic: int = 1,
        accumulate: int = 1,
        grad_clip: float = 0.0,
        num_samples: int = 64,
        seed: int = 0,
        cuda_graph: bool = True,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator, self.objective = generator, discriminator, objective
        self.optimizer_g, self.optimizer_d, self.schedule = optimizer_g, optimizer_d, schedule
        self.n_critic, self.accumulate, self.grad_clip = n_critic, accumulate, grad_clip
        # On CUDA the step is captured as a CUDA graph when every option allows it (dcgan_lab/captured.py).
        self.cuda_graph = cuda_graph
        self.static_step: StaticStep | None = None
        self.lab_config: dict | None = None  # the resolved run config, set by the pipeline; saved in every checkpoint
        # Class-conditional models (G.num_classes > 0): real labels go to D, sampled labels to G and D.
        self.num_classes = getattr(generator, "num_classes", 0) or 0
        # EMA of G's weights (contract: `generator_ema` is None when off; saved as generator_ema.* keys).
        self.ema = ema if ema is not None and ema.decay > 0 else None
        self.generator_ema = make_ema(generator) if self.ema is not None else None
        # Fixed latents: every sample grid of a run (and of its resumptions) shows the same z.
        # Conditional grids show one row per class: samples_per_class latents for each label.
        self.samples_per_class = math.ceil(num_samples / self.num_classes) if self.num_classes else 0
        if self.num_classes:
            num_samples = self.samples_per_class * self.num_classes
        fixed = torch.Generator().manual_seed(seed)
        self.register_buffer("fixed_z", torch.randn(num_samples, generator.latent_dim, generator=fixed))
        fixed_labels = torch.arange(self.num_classes).repeat_interleave(self.samples_per_class) if self.num_classes else None
        self.register_buffer("fixed_labels", fixed_labels)
        self.batches_seen = 0  # training batches over the whole run, restored on resume
        self.step_scalar_names: set[str] = set()  # what training_step has logged: a rollback discards these values
        # Training time of the run's earlier parts (a resumed run's checkpoint), and when this part's fit began.
        self.train_time_before_s, self._fit_clock = 0.0, None
        # Progressive growing: `growth(images_seen) -> (resolution, alpha)` for G, D and the EMA copy.
        self.growth, self.images_seen, self.growth_state = growth, 0, None
        self._apply_growth()

    # ---- sampling ---------------------------------------------------------------------------
    @property
    def g_step(self) -> int:
        """Generator updates so far: what GAN papers call iterations."""
        return self.batches_seen // self.n_critic

    @property
    def sampling_generator(self) -> nn.Module:
        """What grids and metrics draw from (nets.ema.sampling_generator: the EMA copy when on)."""
        return sampling_generator(self.generator, self.generator_ema)

    def sample_labels(self, n: int) -> Tensor | None:
        """Uniform class labels for G (None for unconditional models)."""
        return torch.randint(self.num_classes, (n,), device=self.device) if self.num_classes else None

    def _g(self, z: Tensor, labels: Tensor | None) -> Tensor:
        return self.generator(z) if labels is None else self.generator(z, labels)

    @torch.no_grad()
    def sample(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images in [-1, 1] from `sampling_generator` in eval mode (BatchNorm running statistics).
        Conditional models get uniform random labels unless `labels` are given."""
        if labels is None:
            labels = self.sample_labels(len(z))
        with evaluating(self.sampling_generator) as generator:
            z = z.to(self.device)
            return (generator(z) if labels is None else generator(z, labels.to(self.device))).float()

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
    def _logging_now(self, g_turn: bool) -> bool:
        """Whether this batch hands its scalars to Lightning: on the batches Lightning writes to the loggers
        ((batches so far + 1) % log_every_n_steps == 0), and on the last batch of an epoch or of the fit, so
        `trainer.callback_metrics` ends with the final values. Gradient norms are computed on these only."""
        trainer = self._trainer
        if trainer is None:
            return True
        if (self.batches_seen + 1) % max(trainer.log_every_n_steps, 1) == 0 or trainer.is_last_batch:
            return True
        steps_after = trainer.global_step + 1 + int(g_turn)  # Lightning counts every optimizer step
        return 0 < trainer.max_steps <= steps_after

    def _update(self, optimizer, network: nn.Module, name: str, scalars: dict) -> None:
        # The norm is read before clipping (clip_grad_norm_'s convention): after it, a clipped run would log a flat
        # line at training.grad_clip and hide how far, and how often, the gradients went past it.
        if scalars is not None:
            grads = [p.grad.detach() for p in network.parameters() if p.grad is not None]
            scalars[f"grad_norm/{name}"] = torch.stack(torch._foreach_norm(grads)).norm()
        if self.grad_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        optimizer.step()

    def g_backward_inputs(self) -> list[Tensor] | None:
        """What G's backward computes gradients for: G's parameters only. G's loss also reaches D's weights, but
        those gradients would never be used (D zeroes its own before its backward); leaving them out lets
        oneDNN/cuDNN skip D's weight-gradient convolutions, ~10% of a 32px step on CPU, bit-identical losses.
        None (every leaf) under DDP: its reducer waits for every parameter in the graph to get a gradient."""
        if self._trainer is not None and self.trainer.world_size > 1:
            return None
        return [p for p in self.generator.parameters() if p.requires_grad]

    def on_train_start(self) -> None:
        self._log_once_an_epoch_at_least()
        # A resume under a longer plan (a higher max_epochs) restores the rate the old plan saved, e.g. 0 at the end
        # of a linear decay: every schedule's rate is set from its formula at the saved step, so the first step
        # follows the new plan too. Otherwise a no-op (base rates carry the divergence guard's cuts).
        for scheduler in self._schedulers():
            for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base * factor(scheduler.last_epoch)
        if self.device.type != "cuda" or self.static_step is not None:
            return
        blockers = capture_blockers(self, self.trainer) if self.cuda_graph else ["training.cuda_graph=false"]
        if blockers:
            log.info("CUDA graph of the step: off (%s); the eager step runs", "; ".join(blockers))
        else:
            log.info("CUDA graph of the step: on (recorded after %d eager batches)", WARMUP_BATCHES)
            self.static_step = StaticStep(self, capture=True)

    def _log_once_an_epoch_at_least(self) -> None:
        """Data of fewer batches an epoch than trainer.log_every_n_steps (a small image folder) would get its losses
        written less than once an epoch, and a short run none at all: the cadence becomes each epoch's last batch."""
        trainer = self.trainer
        batches = trainer.num_training_batches
        if trainer.loggers and math.isfinite(batches) and 0 < batches < trainer.log_every_n_steps:
            log.info("trainer.log_every_n_steps=%d is more than an epoch's %d batches: the losses are logged every %d "
                     "batches, at each epoch's end", trainer.log_every_n_steps, batches, batches)
            trainer.log_every_n_steps = int(batches)  # Lightning reads it at every batch

    def training_step(self, batch, batch_idx):
        if self.static_step is not None:
            return self._static_training_step(batch)
        real, labels = batch
        if self.growth is not None:
            self._apply_growth()
            if real.shape[-1] != self.growth_state[0]:
                real = F.adaptive_avg_pool2d(real, self.growth_state[0])  # (B, C, S, S) -> (B, C, r, r)
        objective, g_step = self.objective, self.g_step
        opt_d, opt_g = self.optimizers()
        g_turn = (self.batches_seen + 1) % self.n_critic == 0
        scalars: dict[str, Tensor] | None = self.learning_rates() if self._logging_now(g_turn) else None
        chunks = real.chunk(self.accumulate)
        n_chunks = len(chunks)
        real_ys = labels.chunk(self.accumulate) if self.num_classes else [None] * n_chunks
        fake_ys = [self.sample_labels(len(c)) for c in chunks]
        reuse_fake = g_turn and n_chunks == 1

        # G keeps its graph only when it steps on this same batch. D's backward never reaches G (the
        # objective detaches fakes), and G's backward stops at G's parameters (g_backward_inputs).
        with torch.set_grad_enabled(reuse_fake):
            fakes = [self._g(self.generator.sample_latent(len(c), self.device), y) for c, y in zip(chunks, fake_ys)]

        opt_d.zero_grad(set_to_none=True)
        d_logs: dict[str, Tensor] = {}
        for chunk, fake, real_y, fake_y in zip(chunks, fakes, real_ys, fake_ys):
            loss_d, stats = objective.d_loss(self.discriminator, chunk, fake, real_y, fake_y, g_step)
            self.manual_backward(loss_d / n_chunks)
            if scalars is not None:
                add_micro_batch(d_logs, {"loss/d": loss_d.detach(), **stats}, n_chunks)
        self._update(opt_d, self.discriminator, "d", scalars)

        if g_turn:
            opt_g.zero_grad(set_to_none=True)
            g_inputs = self.g_backward_inputs()
            g_logs: dict[str, Tensor] = {}
            for chunk, fake, real_y, fake_y in zip(chunks, fakes, real_ys, fake_ys):
                if not reuse_fake:
                    fake = self._g(self.generator.sample_latent(len(chunk), self.device), fake_y)
                loss_g, stats = objective.g_loss(self.discriminator, chunk, fake, real_y, fake_y, g_step)
                self.manual_backward(loss_g / n_chunks, inputs=g_inputs)
                if scalars is not None:
                    add_micro_batch(g_logs, {"loss/g": loss_g.detach(), **stats}, n_chunks)
            self._update(opt_g, self.generator, "g", scalars)
            if self.ema is not None:
                ema_update(self.generator_ema, self.generator, self.ema.beta(self.g_step))
            for scheduler in self._schedulers():
                scheduler.step()
            if scalars is not None:
                scalars.update(g_logs)
        self.batches_seen += 1
        self.images_seen += len(real)
        if scalars is not None:
            self._log_step(scalars, d_logs, objective.noise_sigma(g_step) if objective.instance_noise else None)

    def _static_training_step(self, batch) -> None:
        """The same step through StaticStep (captured on CUDA): Lightning's optimizer wrappers are bypassed, so
        their step counters are advanced here, and schedules step as in the eager path."""
        real, labels = batch
        g_turn = (self.batches_seen + 1) % self.n_critic == 0
        logging_now = self._logging_now(g_turn)
        rates = self.learning_rates() if logging_now else {}
        sigma = self.objective.noise_sigma(self.g_step) if self.objective.instance_noise else None
        outputs = self.static_step(real, labels, g_turn)
        opt_d, opt_g = self.optimizers()
        for optimizer in (opt_d, opt_g) if g_turn else (opt_d,):
            optimizer._on_before_step()
            optimizer._on_after_step()
        if g_turn:
            for scheduler in self._schedulers():
                scheduler.step()
            self.static_step.sync_learning_rates()
        self.batches_seen += 1
        self.images_seen += len(real)
        if logging_now:
            penalties = self.objective.penalty_names
            names = ["loss/d", "D(x)", "D(G(z))", "grad_norm/d", *penalties["d"]] + (
                ["loss/g", "grad_norm/g", *penalties["g"]] if g_turn else [])
            self._log_step({**rates, **{name: outputs[name].clone() for name in names}}, {}, sigma)

    def learning_rates(self) -> dict:
        """lr/d and lr/g as this batch's updates use them: read before a schedule steps, after a divergence
        rollback's cut. A captured run's scheduled rate is a device buffer that the next step rewrites: a copy."""
        opt_d, opt_g = self.optimizers(use_pl_optimizer=False)
        rates = {"lr/d": opt_d.param_groups[0]["lr"], "lr/g": opt_g.param_groups[0]["lr"]}
        return {name: lr.detach().clone() if isinstance(lr, Tensor) else float(lr) for name, lr in rates.items()}

    def _log_step(self, scalars: dict, d_logs: dict, sigma: float | None) -> None:
        scalars.update(d_logs)
        scalars["g_step"] = float(self.g_step)
        if self.growth_state is not None:
            scalars["progressive/resolution"] = float(self.growth_state[0])
            scalars["progressive/alpha"] = float(self.growth_state[1])
        if sigma is not None:  # instance noise configured: logged down to 0 as it anneals
            scalars["instance_noise"] = sigma
        self.step_scalar_names.update(scalars)
        # Under DDP each rank sees other images: scalars are averaged over ranks before they are logged.
        self.log_dict(scalars, sync_dist=self.trainer.world_size > 1)

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

    @property
    def optimizer_factories(self) -> dict[str, Callable]:
        """The configured optimizers by network (a resume's and a rollback's checkpoint are checked against them)."""
        return {"discriminator": self.optimizer_d, "generator": self.optimizer_g}

    @property
    def train_time_s(self) -> float:
        """Seconds of training over the whole run: the earlier parts' (a resume's checkpoint) and this fit's so far."""
        return self.train_time_before_s + (time.perf_counter() - self._fit_clock if self._fit_clock is not None else 0.0)

    def on_fit_start(self) -> None:
        self._fit_clock = time.perf_counter()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if "optimizer_states" in checkpoint:  # a captured run's checkpoints resume eagerly too
            checkpoint["optimizer_states"] = portable_optimizer_states(checkpoint["optimizer_states"])
        checkpoint["batches_seen"] = self.batches_seen
        checkpoint["images_seen"] = self.images_seen
        checkpoint["train_time_s"] = self.train_time_s
        if self.lab_config is not None:
            checkpoint["lab_config"] = self.lab_config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.batches_seen = checkpoint.get("batches_seen", 0)
        self.images_seen = checkpoint.get("images_seen", 0)
        self.train_time_before_s = float(checkpoint.get("train_time_s", 0.0))
        # This run's optimizer settings, not the saved ones (Lightning restores the states after this hook).
        changes = optimizer_setting_changes(checkpoint, self.optimizer_factories, "being resumed")
        apply_optimizer_settings(checkpoint, changes)
        for network, key, saved, wanted in changes:
            log.info("resume: the %s's optimizer %s is %s as configured (the checkpoint's run had %s)",
                     network, key, wanted, saved)
        self._apply_growth()  # resume at the saved phase and alpha
