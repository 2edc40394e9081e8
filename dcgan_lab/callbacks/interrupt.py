"""Ctrl-C or SIGTERM writes a checkpoint at the next batch boundary: `resume=true` then continues exactly where it
stopped."""
from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

import lightning as L

from dcgan_lab.callbacks.guard import diverged_weights
from dcgan_lab.checkpoint_io import wait_for_checkpoint_writes
from dcgan_lab.errors import Interrupted

log = logging.getLogger(__name__)

# A second signal within this many seconds of the first is the same stop, not "stop at once": a parallel sweep
# passes the signal on to its jobs (sweep.SweepSummary), which a terminal's Ctrl-C or SLURM may have reached already.
SAME_STOP_S = 1.0
# What each signal means to the user; SIGTERM is what SLURM (and most schedulers, `kill`, `docker stop`) send before
# they kill a job, e.g. on preemption or at its time limit, usually with some 30 s to spare.
STOP_SIGNALS = {
    signal.SIGINT: "Ctrl-C: finishing this batch, then saving checkpoints/last.ckpt (Ctrl-C again to stop at once)",
    signal.SIGTERM: "SIGTERM (a scheduler's stop, e.g. SLURM preemption): finishing this batch, then saving "
                    "checkpoints/last.ckpt",
}


class SaveOnInterrupt(L.Callback):
    """The first Ctrl-C (SIGINT) or SIGTERM lets the batch in progress finish, saves `checkpoints/last.ckpt` at its
    end (the point Lightning resumes from, with the data order and RNG states of that moment), then stops. A second
    signal stops at once without saving. A diverged (NaN/Inf) state is never saved over the last good one.
    (Lightning's own SIGTERM handler, which ends the fit at that batch's end, runs beside this one.)"""

    def __init__(self):
        self._requested = self._stop = False
        self._requested_at = 0.0
        self._previous_handlers: dict[int, object] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        self._requested = self._stop = False
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous_handlers = {signum: signal.signal(signum, self._request) for signum in STOP_SIGNALS}

    def _request(self, signum, frame) -> None:
        if self._requested:
            if time.monotonic() - self._requested_at < SAME_STOP_S:  # e.g. a parallel sweep passing on the Ctrl-C
                return                                                # the terminal has sent to its jobs already
            raise KeyboardInterrupt
        self._requested, self._requested_at = True, time.monotonic()
        log.warning(STOP_SIGNALS[signum])

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
            trainer.save_checkpoint(path, weights_only=False)  # the full state, as every checkpoint of the run
            wait_for_checkpoint_writes(trainer)  # on disk before the line below says so
            if trainer.is_global_zero:  # how to continue: pipeline.interruption's line, next
                log.warning("saved %s at G step %d", path, pl_module.g_step)
        self._stop = True

    def teardown(self, trainer, pl_module, stage) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}


class StopBeforeTraining(L.Callback):
    """Ctrl-C or SIGTERM before training starts, while the data is decoded and the run is built (minutes for a large
    uncached image folder): nothing is trained yet, so there is no batch to finish and nothing to save. The run stops
    at once as `Interrupted` (one line, status.json `interrupted`, exit 128 + the signal's number) instead of Python's
    traceback (SIGINT) or a silent death (SIGTERM). `pipeline.train` installs it at its start (a context manager) and
    appends it to the Trainer's callbacks: at the fit's start SaveOnInterrupt (before it in the list) and Lightning
    take the signals over, and this one hands them back to what was there before."""

    def __init__(self, restart: str, g_steps: int | None = 0):
        self.restart = restart  # what to type to run it again
        self.g_steps = g_steps  # G steps done before this process (a resumed run's), None while not known
        self.armed = False
        self._stopped_at = -SAME_STOP_S
        self._previous_handlers: dict[int, object] = {}

    def __enter__(self) -> "StopBeforeTraining":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous_handlers = {signum: signal.signal(signum, self._stop) for signum in STOP_SIGNALS}
        self.armed = True
        return self

    def __exit__(self, *exc) -> None:
        self.armed = False
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def _stop(self, signum, frame) -> None:
        if not self.armed:  # training has started (SaveOnInterrupt gave this handler back at its end): as before
            if time.monotonic() - self._stopped_at < SAME_STOP_S:  # the same stop, passed on by a parallel sweep
                return
            self._pass_on(signum, frame)
            return
        self.armed = False  # a second signal while this one unwinds: Python's default, not a second message
        self._stopped_at = time.monotonic()
        message = (f"interrupted by {signal.Signals(signum).name} before training started (while the data was loaded "
                   f"and the run built): nothing was trained or saved; {self.restart}")
        log.warning(message)
        raise Interrupted(signum, message, g_steps=self.g_steps, train_time_s=0.0)

    def _pass_on(self, signum, frame) -> None:
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        if callable(previous):  # SIGINT's default: KeyboardInterrupt
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # SIGTERM's default: the process ends
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    def on_fit_start(self, trainer, pl_module) -> None:
        self.armed = False
        for signum, handler in self._previous_handlers.items():
            if signal.getsignal(signum) == self._stop:  # no SaveOnInterrupt took it over (callbacks=none)
                signal.signal(signum, handler)
