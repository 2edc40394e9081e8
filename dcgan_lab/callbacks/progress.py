"""A progress bar that never makes the training loop wait for the GPU."""
from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


class LabProgressBar(TQDMProgressBar):
    """TQDM bar whose postfix shows the last logged values of `show` (losses by default).

    The module logs without `prog_bar=True` (Lightning would convert those values to numbers on the host
    after every batch); this bar reads them only when it redraws, every `refresh_rate` batches.
    """

    def __init__(self, refresh_rate: int = 10, show: tuple[str, ...] | list[str] = ("loss/d", "loss/g")):
        super().__init__(refresh_rate=refresh_rate)
        self.show = tuple(show)

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        logged = trainer.callback_metrics
        for name in self.show:
            if name in logged:
                metrics[name] = f"{float(logged[name]):.3g}"
        return metrics
