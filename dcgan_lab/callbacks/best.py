"""checkpoints/best.ckpt: the weights at the best evaluation so far, for evaluate.py and export."""
from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """Keeps one checkpoint, `<dirpath>/best.ckpt`: the state at the epoch's end whose evaluation gave the best
    `monitor` so far (the lowest classifier FID by default; `mode: max` for a higher-is-better metric). Evaluations
    run every `metrics.every_n_epochs`; between them the last value stands and nothing is saved. A run that does not
    measure `monitor` (metrics=none) keeps no best.ckpt, without Lightning's missing-key warning every epoch.
    Resumed runs go on comparing with the best of their first part (the score is saved in last.ckpt)."""

    def __init__(self, dirpath: str, monitor: str = "classifier/fid", mode: str = "min"):
        super().__init__(dirpath=dirpath, filename="best", monitor=monitor, mode=mode, save_top_k=1, save_last=False,
                         auto_insert_metric_name=False, save_on_train_epoch_end=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Under DDP only rank 0 evaluates, while saving is collective: every rank takes rank 0's value, or none.
        value = trainer.strategy.broadcast(trainer.callback_metrics.get(self.monitor), src=0)
        if value is not None:
            trainer.callback_metrics[self.monitor] = value
            super().on_train_epoch_end(trainer, pl_module)
