"""Divergence guard: a NaN/Inf loss, gradient or weight either stops the run (one line naming the network and
the G step; the last good checkpoint and the sample grids are left as they were) or rolls G and D back to the
last good checkpoint with lower learning rates and carries on.

The hot loop never waits for the device on its account: every update's gradients are checked on the device;
every `every_n_batches` batches the verdict starts on its way to the host and is acted on at the first batch
end after it lands (on a CPU, that same batch). At each epoch's end it is read at once, before the sample grid
and ModelCheckpoint, so a diverged state is never saved or drawn.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import lightning as L
import torch
from torch import nn

from dcgan_lab.callbacks.host_read import HostRead
from dcgan_lab.checkpoint_io import (apply_optimizer_settings, g_steps_done, optimizer_setting_changes, read_checkpoint,
                                    wait_for_checkpoint_writes)
from dcgan_lab.errors import LabError

log = logging.getLogger(__name__)

NETWORKS = ("discriminator", "generator")  # the order in which they step within a batch


class DivergenceError(LabError):
    """Training produced NaN/Inf; the message names the network and the step."""


def all_finite(tensors) -> torch.Tensor:
    """A bool on the tensors' device: none holds a NaN or Inf (the sum of the norms is NaN/Inf when any element is).
    `tensors` must not be empty."""
    return torch.isfinite(torch.stack(torch._foreach_norm([t.detach() for t in tensors])).sum())


def first_nonfinite(network: nn.Module) -> str | None:
    """Name of the first parameter holding a NaN or Inf, else None (reads the device: call it on failure only)."""
    for name, p in network.named_parameters():
        if not torch.isfinite(p).all():
            return name
    return None


def diverged_weights(pl_module) -> str | None:
    """'<network> weights became NaN/Inf (<network>.<parameter>)' for the first such network, else None."""
    for network in NETWORKS:
        bad = first_nonfinite(getattr(pl_module, network))
        if bad is not None:
            return f"{network} weights became NaN/Inf ({network}.{bad})"
    return None


class DivergenceGuard(L.Callback):
    """Its settings are checked with the rest of the config (dcgan_lab/schema.py).

    action: "stop" raises DivergenceError (the CLI prints one line, exit 2);
    "rollback" reloads the last good checkpoint (or the weights at the start of this fit when none exists
    yet), multiplies every learning rate by `lr_factor`, and goes on, at most `max_rollbacks` times before
    stopping. Under DDP gradients are all-reduced and weights identical, so every rank reaches the same verdict.
    """

    def __init__(self, action: str = "stop", lr_factor: float = 0.5, max_rollbacks: int = 3, every_n_batches: int = 10):
        self.action, self.lr_factor, self.max_rollbacks = action, lr_factor, max_rollbacks
        self.every_n_batches = max(int(every_n_batches), 1)
        self.rollbacks = 0
        self.lr_scale = 1.0  # product of the lr_factors applied so far; saved with checkpoints
        # Each rollback: where the divergence began and the state it went back to (status.json, the end line).
        self.history: list[dict] = []
        self._start_snapshot: dict | None = None
        self._start_g_step = 0
        self._owners: dict[int, int] = {}  # id(optimizer) -> index into NETWORKS
        # When each network's weights, or the gradients of its update, were first seen NaN/Inf: an event time
        # 2 * (2 * batch + index of the stepping network) + (0 weights, 1 gradients), -1 while none. Kept on
        # the device, read at the check cadence. The batch number lives on the device too, so the checks can be
        # recorded once into a CUDA graph of the step and stay right on every replay.
        self._first_bad: torch.Tensor | None = None
        self._batch: torch.Tensor | None = None
        self._pending: tuple[HostRead, int] | None = None  # a verdict on its way to the host, and its batch

    # ---- checkpointed state ----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"lr_scale": self.lr_scale, "rollbacks": self.rollbacks, "history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.lr_scale = state_dict.get("lr_scale", 1.0)
        self.rollbacks = state_dict.get("rollbacks", 0)
        self.history = list(state_dict.get("history", []))

    def summary(self, g_step_now: int) -> str | None:
        """The run's rollbacks in one line, or None when there were none."""
        if not self.history:
            return None
        steps = ", ".join(str(r["diverged_at_g_step"]) for r in self.history)
        last = self.history[-1]
        line = (f"rolled back {len(self.history)} time(s) (divergence at G step {steps}), last to {last['to']} "
                f"(G step {last['to_g_step']}), learning rates now x{self.lr_scale:g}")
        if last["at_g_step"] == g_step_now:  # at the last epoch's end: no step trained after it
            line += (f"; the run ended there: its final weights are those of G step {last['to_g_step']}, and the "
                     "discarded steps' losses and D outputs are left out of its final metrics")
        return line

    # ---- detection, on the device ----------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        self._first_bad = torch.full((len(NETWORKS), 2), -1, dtype=torch.long, device=pl_module.device)
        self._batch = torch.zeros((), dtype=torch.long, device=pl_module.device)
        if self.action == "rollback":
            self._start_g_step = pl_module.g_step
            self._start_snapshot = {
                "state_dict": copy.deepcopy(pl_module.state_dict()),
                "optimizer_states": [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers],
                "callbacks": {self.state_key: self.state_dict()},
            }

    def _owner(self, pl_module, optimizer) -> int:
        if id(optimizer) not in self._owners:
            first = next(p for group in optimizer.param_groups for p in group["params"])
            self._owners[id(optimizer)] = next(
                i for i, n in enumerate(NETWORKS) if any(first is p for p in getattr(pl_module, n).parameters()))
        return self._owners[id(optimizer)]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._batch is not None:
            self._batch.fill_(pl_module.batches_seen)  # a kernel argument, no host read

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # Both networks' weights and the stepping one's gradients, before every update: the earliest event
        # names the culprit (a NaN in G's weights makes D's gradients NaN one update later, not the reverse).
        # Device operations only: this hook is graph-safe.
        if self._first_bad is None:
            return
        k = self._owner(pl_module, optimizer)
        update = self._batch * 4 + 2 * k
        first_bad = self._first_bad
        weights_bad = ~torch.stack([all_finite(getattr(pl_module, n).parameters()) for n in NETWORKS])
        first_bad[:, 0] = torch.where(weights_bad & (first_bad[:, 0] < 0), update, first_bad[:, 0])
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            first_bad[k, 1] = torch.where(~all_finite(grads) & (first_bad[k, 1] < 0), update + 1, first_bad[k, 1])

    # ---- the verdict, on the host ----------------------------------------------------------
    def _flags(self, pl_module) -> torch.Tensor:
        """What the verdict reads, on the device: each network's first bad event times (weights, gradients),
        then 1 for each network whose weights hold a NaN/Inf now."""
        weights_bad = ~torch.stack([all_finite(getattr(pl_module, n).parameters()) for n in NETWORKS])
        return torch.cat([self._first_bad.flatten(), weights_bad.long()])

    def _verdict(self, trainer, pl_module, flags: list[int], batch_now: int) -> tuple[str, int] | None:
        """None while everything was finite, else the one-line problem and where it began, and that G step."""
        n_nets = len(NETWORKS)
        first_bad = [flags[2 * n: 2 * n + 2] for n in range(n_nets)]
        weights_bad = flags[2 * n_nets:]
        events = [(t, n, kind) for n, row in enumerate(first_bad) for kind, t in enumerate(row) if t >= 0]
        if not events and not any(weights_bad):
            return None
        if events:
            time, n, _ = min(events)
            batch = time // 4
        else:  # weights changed after the last update (e.g. by hand): name them at the batch they were seen
            batch, n = batch_now, weights_bad.index(1)
        network = NETWORKS[n]
        bad_param = first_nonfinite(getattr(pl_module, network))
        problem = (f"{network} weights became NaN/Inf ({network}.{bad_param})" if bad_param
                   else f"{network} loss or gradients became NaN/Inf")
        epoch, g_step = batch // max(trainer.num_training_batches, 1), batch // pl_module.n_critic
        return f"{problem} at G step {g_step} (epoch {epoch}, batch {batch})", g_step

    def _act(self, trainer, pl_module, flags: list[int], batch_now: int) -> None:
        verdict = self._verdict(trainer, pl_module, flags, batch_now)
        if verdict is None:
            return
        problem, g_step = verdict
        if self.action == "rollback" and self.rollbacks < self.max_rollbacks:
            self._roll_back(trainer, pl_module, f"divergence: {problem}", g_step)
        else:
            self._fail(trainer, problem)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._first_bad is None:
            return
        if self._pending is None and pl_module.batches_seen % self.every_n_batches == 0:
            self._pending = HostRead(self._flags(pl_module)), pl_module.batches_seen
        if self._pending is not None and self._pending[0].ready():
            read, batch_then = self._pending
            self._pending = None
            self._act(trainer, pl_module, read.values(), batch_then)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Runs before the sample grid and ModelCheckpoint, and waits for its read: a diverged state is never
        # drawn or saved.
        if self._first_bad is None:
            return
        self._pending = None
        self._act(trainer, pl_module, HostRead(self._flags(pl_module)).values(), pl_module.batches_seen)

    def _fail(self, trainer, problem: str) -> None:
        """`problem` names the network and says where, in one line."""
        last = self._last_good_checkpoint(trainer)
        kept = f"last good checkpoint: {last}" if last else "no checkpoint was written yet"
        tried = f" after {self.rollbacks} rollback(s)" if self.action == "rollback" else ""
        raise DivergenceError(
            f"divergence: {problem}{tried}; training stopped, {kept}. "
            "Lower optimizer.lr_g/lr_d, or set callbacks.divergence_guard.action=rollback"
        )

    # ---- rollback --------------------------------------------------------------------------
    @staticmethod
    def _last_good_checkpoint(trainer) -> str | None:
        wait_for_checkpoint_writes(trainer)
        # The callback that writes last.ckpt (best.ckpt's, from callbacks.best_checkpoint, is an older state).
        callback = next((c for c in trainer.checkpoint_callbacks if c.save_last), trainer.checkpoint_callback)
        path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
        return path if path and Path(path).is_file() else None

    def _roll_back(self, trainer, pl_module, problem: str, g_step: int) -> None:
        path = self._last_good_checkpoint(trainer)
        if path is not None:
            checkpoint, source = read_checkpoint(path), path
            to_g_step = g_steps_done(checkpoint, pl_module.n_critic)
        else:
            checkpoint, source = self._start_snapshot, "the weights at the start of this fit"
            to_g_step = self._start_g_step
        pl_module.load_state_dict(checkpoint["state_dict"])
        # A checkpoint from before a resume that changed optimizer settings: this run's settings, as on resume.
        apply_optimizer_settings(checkpoint, optimizer_setting_changes(checkpoint, pl_module.optimizer_factories, source))
        saved_scale = checkpoint.get("callbacks", {}).get(self.state_key, {}).get("lr_scale", 1.0)
        self.lr_scale *= self.lr_factor
        for optimizer, state in zip(trainer.optimizers, checkpoint["optimizer_states"]):
            optimizer.load_state_dict(state)
            for group in optimizer.param_groups:
                group["lr"] *= self.lr_scale / saved_scale
        for config in trainer.lr_scheduler_configs:  # schedules recompute lr from base_lrs each step
            config.scheduler.base_lrs = [lr * self.lr_factor for lr in config.scheduler.base_lrs]
        # The step scalars on hand are the discarded steps' (a NaN loss, a D(x), the rates before the cut): after a
        # rollback at the last epoch's end they would be the run's final numbers. The next logged batch refills them.
        for name in pl_module.step_scalar_names:
            trainer.callback_metrics.pop(name, None)
        trainer.callback_metrics.update({name: torch.tensor(float(lr)) for name, lr in pl_module.learning_rates().items()})
        self._first_bad.fill_(-1)
        self._pending = None  # read before the rollback
        self.rollbacks += 1
        self.history.append({"diverged_at_g_step": g_step, "at_g_step": pl_module.g_step, "to": source,
                             "to_g_step": to_g_step})
        lrs = ", ".join(f"{float(g['lr']):.3g}" for opt in trainer.optimizers for g in opt.param_groups)
        log.warning(
            "%s; rolled back to %s with learning rates x%g (now %s), rollback %d of %d",
            problem, source, self.lr_scale, lrs, self.rollbacks, self.max_rollbacks,
        )
