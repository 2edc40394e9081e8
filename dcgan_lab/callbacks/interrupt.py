"""Ctrl-C writes a checkpoint at the next batch boundary: `resume=true` then continues exactly where it stopped."""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import lightning as L

from dcgan_lab.callbacks.guard import diverged_weights
from dcgan_lab.checkpoint_io import wait_for_checkpoint_writes

log = logging.getLogger(__name__)


class SaveOnInterrupt(L.Callback):
    """The first Ctrl-C (SIGINT) lets the batch in progress finish, saves `checkpoints/last.ckpt` at its end (the
    point Lightning resumes from, with the data order and RNG states of that moment), then stops. A second Ctrl-C
    stops at once without saving. A diverged (NaN/Inf) state is never saved over the last good one."""

    def __init__(self):
        self._requested = self._stop = False
        self._previous_handler = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._requested = self._stop = False
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous_handler = signal.signal(signal.SIGINT, self._request)

    def _request(self, signum, frame) -> None:
        if self._requested:
            raise KeyboardInterrupt
        self._requested = True
        log.warning("Ctrl-C: finishing this batch, then saving checkpoints/last.ckpt (Ctrl-C again to stop at once)")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._stop:  # the interrupted batch's metrics were written; Lightning's own shutdown from here
            raise KeyboardInterrupt

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._requested or self._stop:
            return
        if diverged_weights(pl_module) is not None:
            log.warning("interrupted with NaN/Inf weights: no checkpoint saved")
        else:
            callback = trainer.checkpoint_callback
            folder = Path(callback.dirpath) if callback is not None and callback.dirpath else Path(trainer.default_root_dir) / "checkpoints"
            path = folder / "last.ckpt"
            trainer.save_checkpoint(path)
            wait_for_checkpoint_writes(trainer)  # on disk before the line below says so
            if trainer.is_global_zero:
                log.warning("interrupted after G step %d: saved %s; continue with resume=true hydra.run.dir=%s",
                            pl_module.g_step, path, folder.parent)
        self._stop = True

    def teardown(self, trainer, pl_module, stage) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None
