"""Ctrl-C writes a checkpoint: `resume=true` then continues where the run was interrupted."""
from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from dcgan_lab.callbacks.guard import diverged_weights

log = logging.getLogger(__name__)


class SaveOnInterrupt(L.Callback):
    """On KeyboardInterrupt (SIGINT) saves `checkpoints/last.ckpt`, unless the weights are NaN/Inf (a diverged
    state is never saved over the last good one)."""

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt):
            return
        if diverged_weights(pl_module) is not None:
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
