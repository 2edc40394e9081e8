"""The run's checkpoints: last.ckpt at every epoch's end, epochNNNN.ckpt every N epochs, and best.ckpt.

Lightning (2.6) writes last.ckpt only in an epoch that also writes a numbered checkpoint, and at the end of
training only when it wrote none at all, so a 22-epoch run with numbered checkpoints every 5 epochs would keep
epoch 19 as its "last": resume=true would redo two epochs, and evaluate.py and a sweep's report would measure a
G two epochs old. EpochCheckpoints keeps last.ckpt the newest state.
"""
from __future__ import annotations

import difflib
import logging

from lightning.pytorch.callbacks import ModelCheckpoint

from dcgan_lab.metrics.registry import is_metric_scalar

log = logging.getLogger(__name__)


class EpochCheckpoints(ModelCheckpoint):
    """last.ckpt at the end of every epoch (a run stopped mid-epoch by max_steps or max_time ends its epoch there),
    and `filename` checkpoints every `every_n_epochs` epochs, as Lightning's `ModelCheckpoint` writes them. Writes
    go through the lab's background writer (checkpoint_io.py): the loop hands over a host copy and goes on."""

    def __init__(self, dirpath: str, filename: str = "epoch{epoch:04d}", every_n_epochs: int = 5, save_top_k: int = -1):
        super().__init__(dirpath=dirpath, filename=filename, every_n_epochs=every_n_epochs, save_top_k=save_top_k,
                         save_last=True, auto_insert_metric_name=False, save_on_train_epoch_end=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer):  # nothing written at this step yet
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class BestCheckpoint(ModelCheckpoint):
    """Keeps one checkpoint, `<dirpath>/best.ckpt`: the state at the evaluation that gave the best `monitor` so far
    (the lowest classifier FID by default; `mode: max` for a higher-is-better metric). Evaluations run every
    `metrics.every_n_epochs` and at the last epoch's end (metrics.at_end), all before the checkpoint callbacks run;
    between them the last value stands and nothing is saved. A run that does not measure `monitor` (metrics=none)
    keeps no best.ckpt, without Lightning's missing-key warning every epoch. Resumed runs go on comparing with the
    best of their first part (the score is saved in last.ckpt, which EpochCheckpoints writes after this callback)."""

    def __init__(self, dirpath: str, monitor: str = "classifier/fid", mode: str = "min"):
        super().__init__(dirpath=dirpath, filename="best", monitor=monitor, mode=mode, save_top_k=1, save_last=False,
                         auto_insert_metric_name=False, save_on_train_epoch_end=True)
        self._said_missing = False

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Under DDP only rank 0 evaluates, while saving is collective: every rank takes rank 0's value, or none.
        value = trainer.strategy.broadcast(trainer.callback_metrics.get(self.monitor), src=0)
        if value is not None:
            trainer.callback_metrics[self.monitor] = value
            super().on_train_epoch_end(trainer, pl_module)
        elif not self._said_missing and (measured := sorted(k for k in trainer.callback_metrics if is_metric_scalar(k))):
            # An evaluation ran without the monitored scalar (callbacks.best_checkpoint.monitor=classifier/fdi, or a
            # metric not in metrics.enabled): said once, where it would otherwise pass in silence.
            self._said_missing = True
            close = difflib.get_close_matches(self.monitor, measured, n=1)
            log.warning("no checkpoints/best.ckpt: callbacks.best_checkpoint.monitor=%s is not among the metrics this "
                        "run measures (%s%s)", self.monitor, f"did you mean {close[0]}? " if close else "",
                        ", ".join(measured))
