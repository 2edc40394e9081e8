"""A progress bar that never makes the training loop wait for the GPU, and progress as log lines where a bar
would garble the console."""
from __future__ import annotations

import logging
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n

from dcgan_lab.callbacks.host_read import HostRead

log = logging.getLogger(__name__)


class LabProgressBar(TQDMProgressBar):
    """TQDM bar whose postfix shows the last logged values of `show` (losses by default).

    The module logs without `prog_bar=True` (Lightning would convert those values to numbers on the host
    after every batch). Each redraw, every `refresh_rate` batches, starts the shown values on their way to the
    host and shows the ones that have landed (on a GPU, usually the previous redraw's); an epoch's last redraw
    waits for its own, and shows the epoch's batch count even when the fit stopped between redraws
    (`trainer.max_steps`), not the last multiple of `refresh_rate`.
    """

    def __init__(self, refresh_rate: int = 10, show: tuple[str, ...] | list[str] = ("loss/d", "loss/g"),
                 leave: bool = True):
        # leave: each epoch's finished bar stays on its own line, so the lines logged at an epoch's end (metrics,
        # the run's stop) start on a fresh line instead of being written into the open bar.
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self.show = tuple(show)
        self._shown: dict[str, str] = {}
        self._pending: tuple[tuple[str, ...], HostRead] | None = None
        self._exact = False  # this redraw waits for the values logged last (an epoch's end)
        self._batches_done = 0  # this epoch's, for its last redraw

    def _land(self) -> None:
        if self._pending is not None and self._pending[1].ready():
            names, read = self._pending
            self._pending = None
            self._shown.update({name: f"{value:.3g}" for name, value in zip(names, read.values())})

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's run id (W&B's 'hbpj'): the run folder names the run
        logged = trainer.callback_metrics
        values = {name: logged[name] for name in self.show if name in logged}
        on_one_device = (all(isinstance(v, torch.Tensor) for v in values.values())
                         and len({v.device for v in values.values()}) == 1)
        if self._exact or not on_one_device:
            self._pending = None  # read now: an epoch's end, or plain numbers
            self._shown.update({name: f"{float(v):.3g}" for name, v in values.items()})
        else:
            self._land()
            if values and self._pending is None:
                stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
                self._pending = tuple(values), HostRead(stacked)
                self._land()  # on a CPU the values are there at once
        return {**metrics, **self._shown}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batches_done = batch_idx + 1
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._batches_done = 0
        opened = self._train_progress_bar
        if self._leave and opened is not None and not opened.disable:
            # Lightning opens a bar at the fit's start and, with `leave`, another for each epoch: the unused first
            # one would stay behind as an empty "Training: 0/?" line.
            opened.leave = False
            opened.close()
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        bar = self.train_progress_bar
        if bar is not None and bar.n != self._batches_done:
            _update_n(bar, self._batches_done)
        self._exact = True
        try:
            super().on_train_epoch_end(trainer, pl_module)
        finally:
            self._exact = False


class EpochLines(L.Callback):
    """Progress as log lines, for a console a bar would garble (pipeline.console_form): a file (a SLURM log,
    nohup, `2>&1 | tee`), where each redraw would pile up on one line, or a sweep job running beside others,
    whose bars would overwrite each other (each line then starts with the job's name). The lines go to the
    console and to the run's train.log:

    - at each epoch's end, its last losses and the training speed;
    - within a long epoch, every `every_s` seconds, the batches done and the time left. These read no device
      value: the hot loop never waits for them.
    """

    def __init__(self, job: str | None = None, show: tuple[str, ...] | list[str] = ("loss/d", "loss/g"),
                 every_s: float = 60.0):
        self.prefix = f"[{job}] " if job else ""
        self.show, self.every_s = tuple(show), every_s
        self._epoch_started = self._last_line = 0.0
        self._first_batch: int | None = None  # the epoch's first batch this process trained (a resume's: mid-epoch)

    @staticmethod
    def _epoch(trainer) -> tuple[str, str]:
        """("epoch 3", " (4 of 20)"): the index the run folder uses (samples/epoch_0003.png, metrics.csv), and
        the count that says how far the run has come (empty when only trainer.max_steps bounds it)."""
        epoch, planned = trainer.current_epoch, trainer.max_epochs
        return f"epoch {epoch}", (f" ({epoch + 1} of {planned})" if planned and planned > 0 else "")

    def on_train_start(self, trainer, pl_module) -> None:
        # A run resumed mid-epoch starts inside an epoch, and Lightning skips that epoch's on_train_epoch_start.
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_started = self._last_line = time.monotonic()
        self._first_batch = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._first_batch is None:
            self._first_batch = batch_idx
        now = time.monotonic()
        if now - self._last_line < self.every_s or not trainer.is_global_zero:  # DDP: one process speaks for all
            return
        self._last_line = now
        done, total = batch_idx + 1, trainer.num_training_batches
        elapsed = now - self._epoch_started  # since this process began the epoch: a resume's part of it
        if isinstance(total, int) and total > 0:
            left = elapsed / (done - self._first_batch) * (total - done)
            log.info("%s%s%s: %d/%d batches (%d%%), %s, about %s left in the epoch", self.prefix, *self._epoch(trainer),
                     done, total, 100 * done // total, _duration(elapsed), _duration(left))
        else:  # an iterable dataset of unknown length
            log.info("%s%s%s: %d batches, %s", self.prefix, *self._epoch(trainer), done, _duration(elapsed))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        logged = trainer.callback_metrics  # an epoch's end: the guard has already waited for the device
        # Every epoch logs its last batch's losses; none are on hand when a rollback at its end discarded them.
        values = (", ".join(f"{name}={float(logged[name]):.3g}" for name in self.show if name in logged)
                  or "no losses: a rollback discarded its steps")
        if "perf/images_per_s" in logged:  # Throughput's, recorded at this epoch's end before this callback
            values += f" ({float(logged['perf/images_per_s']):.0f} img/s)"
        epoch, count = self._epoch(trainer)
        log.info("%s%s done%s, G step %d: %s", self.prefix, epoch, count, pl_module.g_step, values)


def _duration(seconds: float) -> str:
    """42 s, 3 min 05 s, 2 h 07 min."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
