"""Divergence guard and Ctrl-C checkpoint.

- A NaN/Inf weight or loss either stops the run (one line naming the network and the G step; the last
  good checkpoint and the sample grids are left as they were) or rolls G and D back to the last good
  checkpoint with lower learning rates and carries on.
- Ctrl-C (SIGINT) writes `checkpoints/last.ckpt` before Lightning exits, so `resume=true` continues.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import lightning as L
import torch
from torch import nn

from dcgan_lab.errors import LabError

log = logging.getLogger(__name__)

NETWORKS = ("generator", "discriminator")


class DivergenceError(LabError):
    """Training produced NaN/Inf; the message names the network and the step."""


def all_finite(tensors) -> bool:
    """True when no tensor holds a NaN or Inf. One device sync: a sum is NaN/Inf when any element is."""
    tensors = [t.detach() for t in tensors]
    return not tensors or bool(torch.isfinite(torch.stack([t.sum() for t in tensors])).all())


def first_nonfinite(network: nn.Module) -> str | None:
    """Name of the first parameter holding a NaN or Inf, else None."""
    if all_finite(network.parameters()):
        return None
    for name, p in network.named_parameters():
        if not torch.isfinite(p).all():
            return name
    return None


class DivergenceGuard(L.Callback):
    """Before every optimizer step the stepping network's gradients must be finite (a NaN/Inf loss shows up
    there), so a non-finite update is never applied. G's and D's weights are checked every `every_n_batches`
    batches and at each epoch end (before ModelCheckpoint), so a diverged state is never saved.
    Under DDP gradients are all-reduced and weights identical, so every rank reaches the same verdict.

    action: "stop" raises DivergenceError (the CLI prints one line, exit 2);
            "rollback" skips the bad update, reloads the last good checkpoint (or the weights at the start
            of this fit when none exists yet), multiplies every learning rate by `lr_factor`, and goes on,
            at most `max_rollbacks` times before stopping.
    """

    def __init__(self, action: str = "stop", lr_factor: float = 0.5, max_rollbacks: int = 3,
                 every_n_batches: int = 1, save_on_interrupt: bool = True):
        if action not in ("stop", "rollback"):
            raise LabError(f"callbacks.divergence_guard.action={action!r} must be 'stop' or 'rollback'")
        self.action, self.lr_factor, self.max_rollbacks = action, lr_factor, max_rollbacks
        self.every_n_batches, self.save_on_interrupt = max(int(every_n_batches), 1), save_on_interrupt
        self.rollbacks = 0
        self.lr_scale = 1.0  # product of the lr_factors applied so far; saved with checkpoints
        self._start_snapshot: dict | None = None
        self._pending: str | None = None  # a problem found mid-batch, handled at batch end

    # ---- checkpointed state ----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"lr_scale": self.lr_scale, "rollbacks": self.rollbacks}

    def load_state_dict(self, state_dict: dict) -> None:
        self.lr_scale = state_dict.get("lr_scale", 1.0)
        self.rollbacks = state_dict.get("rollbacks", 0)

    # ---- detection -------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        if self.action == "rollback":
            self._start_snapshot = {
                "state_dict": copy.deepcopy(pl_module.state_dict()),
                "optimizer_states": [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers],
                "callbacks": {self.state_key: self.state_dict()},
            }

    @staticmethod
    def _diverged_weights(pl_module) -> str | None:
        for network in NETWORKS:
            bad = first_nonfinite(getattr(pl_module, network))
            if bad is not None:
                return f"{network} weights became NaN/Inf ({network}.{bad})"
        return None

    @staticmethod
    def _owner(pl_module, optimizer) -> str:
        first = next(p for group in optimizer.param_groups for p in group["params"])
        return next((n for n in NETWORKS if any(first is p for p in getattr(pl_module, n).parameters())), "network")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # Gradients before every update (one device sync): a non-finite update is never applied.
        # Weights can only turn NaN/Inf through such an update, so they are checked every N batches.
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads and all_finite(grads):
            return
        problem = self._diverged_weights(pl_module) or f"{self._owner(pl_module, optimizer)} loss or gradients became NaN/Inf"
        if self.action == "stop" or self.rollbacks >= self.max_rollbacks:
            self._fail(trainer, pl_module, f"{problem} {self._where(trainer, pl_module)}")
        # Skip this update (optimizers leave parameters without .grad alone); roll back at batch end.
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        self._pending = self._pending or f"{problem} {self._where(trainer, pl_module)}"

    def _where(self, trainer, pl_module) -> str:
        return f"at G step {pl_module.g_step} (epoch {trainer.current_epoch}, batch {pl_module.batches_seen})"

    def _fail(self, trainer, pl_module, problem: str) -> None:
        """`problem` names the network and says where, in one line."""
        last = self._last_good_checkpoint(trainer)
        kept = f"last good checkpoint: {last}" if last else "no checkpoint was written yet"
        tried = f" after {self.rollbacks} rollback(s)" if self.action == "rollback" else ""
        raise DivergenceError(
            f"divergence: {problem}{tried}; training stopped, {kept}. "
            "Lower optimizer.lr_g/lr_d, or set callbacks.divergence_guard.action=rollback"
        )

    def _handle(self, trainer, pl_module, problem: str | None) -> None:
        if problem is not None:
            problem = f"{problem} {self._where(trainer, pl_module)}"
        problem, self._pending = self._pending or problem, None
        if problem is None:
            return
        if self.action == "rollback" and self.rollbacks < self.max_rollbacks:
            self._roll_back(trainer, pl_module, f"divergence: {problem}")
        else:
            self._fail(trainer, pl_module, problem)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        due = pl_module.batches_seen % self.every_n_batches == 0
        self._handle(trainer, pl_module, self._diverged_weights(pl_module) if due else None)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Runs before ModelCheckpoint (Lightning orders checkpoint callbacks last): a diverged state is never saved.
        self._handle(trainer, pl_module, self._diverged_weights(pl_module))

    # ---- rollback --------------------------------------------------------------------------
    @staticmethod
    def _last_good_checkpoint(trainer) -> str | None:
        callback = trainer.checkpoint_callback
        path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
        return path if path and Path(path).is_file() else None

    def _roll_back(self, trainer, pl_module, problem: str) -> None:
        path = self._last_good_checkpoint(trainer)
        if path is not None:
            checkpoint = torch.load(path, map_location=pl_module.device, weights_only=True)
            source = path
        else:
            checkpoint, source = self._start_snapshot, "the weights at the start of this fit"
        pl_module.load_state_dict(checkpoint["state_dict"])
        saved_scale = checkpoint.get("callbacks", {}).get(self.state_key, {}).get("lr_scale", 1.0)
        self.lr_scale *= self.lr_factor
        for optimizer, state in zip(trainer.optimizers, checkpoint["optimizer_states"]):
            optimizer.load_state_dict(state)
            for group in optimizer.param_groups:
                group["lr"] *= self.lr_scale / saved_scale
        for config in trainer.lr_scheduler_configs:  # schedules recompute lr from base_lrs each step
            config.scheduler.base_lrs = [lr * self.lr_factor for lr in config.scheduler.base_lrs]
        self.rollbacks += 1
        lrs = ", ".join(f"{g['lr']:.3g}" for opt in trainer.optimizers for g in opt.param_groups)
        log.warning(
            "%s; rolled back to %s with learning rates x%g (now %s), rollback %d of %d",
            problem, source, self.lr_scale, lrs, self.rollbacks, self.max_rollbacks,
        )

    # ---- Ctrl-C ----------------------------------------------------------------------------
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not (self.save_on_interrupt and isinstance(exception, KeyboardInterrupt)):
            return
        if self._diverged_weights(pl_module) is not None:
            log.warning("interrupted with NaN/Inf weights: no checkpoint saved")
            return
        callback = trainer.checkpoint_callback
        folder = Path(callback.dirpath) if callback is not None and callback.dirpath else Path(trainer.default_root_dir) / "checkpoints"
        path = folder / "last.ckpt"
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            log.warning(
                "interrupted at G step %d: saved %s; continue with resume=true hydra.run.dir=%s",
                pl_module.g_step, path, folder.parent,
            )
