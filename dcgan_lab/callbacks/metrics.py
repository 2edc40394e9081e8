"""GenerativeMetrics: the metric suite every N epochs and at the end of training.

The final evaluation runs at the last epoch's end, like the others before the checkpoint callbacks (Lightning runs
them last): last.ckpt and best.ckpt see it. Only a run stopped in a way the epoch's end cannot foresee is measured
at on_train_end instead.

Scalars go to every logger (so to metrics.csv, W&B and TensorBoard); figures (class histogram, PCA scatter
and silhouette plot coloured by cluster, samples per cluster) go to <run>/metrics/epochNNNN_*.png, and those
files to the dashboards as `metrics/<figure>`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from dcgan_lab.loggers import dashboard_step, show_png
from dcgan_lab.metrics import registry
from dcgan_lab.metrics.inception import CPU_TRAINING_SAMPLES
from dcgan_lab.metrics.suite import MetricSuite, settings_from

log = logging.getLogger(__name__)


def training_ends_here(trainer) -> bool:
    """At an epoch's end: whether training ends with it (max_epochs or max_steps reached, or a stop asked for).
    The fit loop counts the epoch as processed before this hook."""
    def reached(value: int, limit: int | None) -> bool:
        return limit is not None and limit != -1 and value >= limit

    loop = trainer.fit_loop
    return (reached(loop.epoch_progress.current.processed, loop.max_epochs)
            or reached(loop.epoch_loop.global_step, loop.max_steps) or trainer.should_stop)


class GenerativeMetrics(L.Callback):
    def __init__(self, output_dir: str, cache_dir: str, settings: dict | DictConfig | None = None):
        if isinstance(settings, DictConfig):
            settings = OmegaConf.to_container(settings, resolve=True)
        self.settings = settings_from(settings)
        self.dir = Path(output_dir) / "metrics"
        self.cache_dir = cache_dir
        self.suite: MetricSuite | None = None
        self._evaluated_step: int | None = None
        self._inception_step: int | None = None
        self._epoch = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "split"):
            log.warning("metrics: the trainer has no lab datamodule (real images for reference statistics); metrics are off")
            return
        self.suite = MetricSuite(self.settings, datamodule, self.cache_dir, device=pl_module.device)
        self.suite.prepare()  # the classifier trains on first use (cached afterwards): the cost shows up front, not mid-run

    def _inception_wanted(self, pl_module, at_end: bool) -> bool:
        if not registry.any_needs(self.settings["enabled"], "inception"):
            return False
        mode = self.settings["inception_during_training"]
        if mode == "auto":  # minutes per evaluation on a CPU: at every evaluation only on a GPU
            mode = "every" if pl_module.device.type == "cuda" else "never"
        return mode == "every" or (mode == "end" and at_end)

    def _evaluate(self, trainer, pl_module, inception: bool) -> None:
        generator = pl_module.sampling_generator
        tag = f"epoch{self._epoch:04d}"
        n_inception = None if pl_module.device.type == "cuda" else CPU_TRAINING_SAMPLES
        report = self.suite.evaluate(generator, pl_module.discriminator, inception=inception, figures_dir=self.dir, tag=tag,
                                     inception_n_samples=self.settings["inception_n_samples"] or n_inception)
        step = trainer.global_step
        scalars = {**report.scalars, "epoch": float(self._epoch)}
        logged_at = dashboard_step(trainer)  # beside the epoch's last losses on every dashboard
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=logged_at)
        for path in report.figures:
            show_png(trainer.loggers, f"metrics/{path.stem.removeprefix(tag + '_')}", path, step=logged_at,
                     caption=f"{self.dir.name}/{path.name}")
        for logger in trainer.loggers:
            logger.save()
        # float64, as logged: status.json's final metrics are read from here and must equal metrics.csv's
        trainer.callback_metrics.update({k: torch.tensor(v, dtype=torch.float64) for k, v in report.scalars.items()})
        self._evaluated_step = step
        if inception:
            self._inception_step = step
        summary = ", ".join(f"{k}={report.scalars[k]:.4g}" for k in registry.headline_keys(report.scalars))
        log.info("metrics at epoch %d: %s (%.0f s)", self._epoch, summary, report.scalars["metrics/eval_time_s"])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._epoch = trainer.current_epoch
        if self.suite is None:
            return
        every = self.settings["every_n_epochs"]
        at_end = self.settings["at_end"] and training_ends_here(trainer)
        if at_end or (every and (trainer.current_epoch + 1) % every == 0):
            self._evaluate(trainer, pl_module, inception=self._inception_wanted(pl_module, at_end=at_end))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.suite is None or not self.settings["at_end"]:
            return
        inception = self._inception_wanted(pl_module, at_end=True)
        stale = self._evaluated_step != trainer.global_step
        if stale or (inception and self._inception_step != trainer.global_step):
            self._evaluate(trainer, pl_module, inception=inception)
