"""A progress bar that never makes the training loop wait for the GPU, and one line per epoch for jobs that
share the console with other jobs."""
from __future__ import annotations

import logging

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
    """Progress as one log line per epoch, named after the job: for a job of a sweep that runs several jobs at
    once (hydra/launcher=local or gpu), whose bars would overwrite each other on the one console. The line
    goes to the console and to the job's train.log."""

    def __init__(self, job: str, show: tuple[str, ...] | list[str] = ("loss/d", "loss/g")):
        self.job, self.show = job, tuple(show)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        logged = trainer.callback_metrics  # an epoch's end: the guard has already waited for the device
        values = ", ".join(f"{name}={float(logged[name]):.3g}" for name in self.show if name in logged)
        if "perf/images_per_s" in logged:  # Throughput's, recorded just before (this callback comes last)
            values += f" ({float(logged['perf/images_per_s']):.0f} img/s)"
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        log.info("[%s] epoch %d/%s, G step %d: %s", self.job, trainer.current_epoch + 1, epochs, pl_module.g_step,
                 values)
