"""Loggers. The CSV in the run folder is always written; W&B goes online only with credentials; TensorBoard
writes event files into <run>/tensorboard/.

Every image the lab shows on a dashboard is a PNG it wrote first: `write_png_and_show` writes the file
(atomically) and `show_png` hands that same file to each logger that shows images, so what a dashboard shows
is the local file, pixel for pixel. Callbacks never ask which loggers are there.
"""
from __future__ import annotations

import logging
import netrc
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

import lightning as L
import numpy as np
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

from dcgan_lab.atomic import replaced_atomically
from dcgan_lab.checkpoint_io import wait_for_all_checkpoint_writes
from dcgan_lab.config import flatten
from dcgan_lab.errors import ConfigError
from dcgan_lab.runs import best_values, last_values, read_metrics
from dcgan_lab.sweep import job_name, job_overrides, sweep_group

log = logging.getLogger(__name__)


class RunCsvLogger(CSVLogger):
    """metrics.csv directly in the run folder (name="" and version=""); the config is the run's config.yaml.

    That folder already holds config.yaml and .hydra/ when the CSV starts, and Lightning then warns on every run
    that "previous log files in this directory will be deleted". Only an earlier metrics.csv is (a resume in place
    puts its rows back: run_folder.keep_metrics_on_resume), so the warning would only alarm."""

    def __init__(self, output_dir: str):
        super().__init__(save_dir=output_dir, name="", version="")

    @property
    def experiment(self):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
            return super().experiment


def run_csv_logger(output_dir: str) -> CSVLogger:
    return RunCsvLogger(output_dir)


class FlushLogsWithCheckpoints(L.Callback):
    """Every logger writes out the rows it holds before a checkpoint is saved (the CSV logger buffers up to 100
    steps): a run killed after a checkpoint has on disk every row logged before it, the rows a resume keeps
    (run_folder.rows_before_checkpoint), so the resumed metrics.csv is the uninterrupted one."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            logger.save()


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(
    save_dir: str, project: str, mode: str = "auto", group: str | None = None, tags=(), name: str | None = None, **kwargs
) -> WandbLogger:
    """mode: online | offline | auto (online with credentials, else offline; never prompts for a login).

    In a sweep (-m) the run joins the group named after the sweep (unless `group` is set), is named after its
    job folder, and is tagged with the job's overrides (plus `tags`), so the dashboard can group and filter.
    """
    # W&B rejects tags over 64 characters.
    tags = list(dict.fromkeys([*tags, *(override[:64] for override in job_overrides())]))
    return new_wandb_logger(save_dir, project, mode, group=group or sweep_group(), tags=tags, name=name or job_name(),
                            **kwargs)


class LabWandbLogger(WandbLogger):
    """WandbLogger whose `log_model` sees every checkpoint: the lab writes checkpoints in a background thread
    (checkpoint_io.AtomicCheckpointIO), and Lightning scans the checkpoint files right after each save, when the
    new one may not be on disk yet (then it is never logged). With `log_model` on, the scan first waits for the
    writes; off (the default), nothing waits."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self._wandb_init.get("anonymous") is None:  # Lightning always passes it; W&B warns that it has no effect
            self._wandb_init.pop("anonymous", None)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        if self._log_model:
            wait_for_all_checkpoint_writes()
        super().after_save_checkpoint(checkpoint_callback)


def new_wandb_logger(save_dir: str, project: str, mode: str = "auto", **init) -> WandbLogger:
    """A W&B logger saving under <save_dir>/wandb, in `mode` (WANDB_MODE wins); `init` goes to wandb.init."""
    mode = os.environ.get("WANDB_MODE", mode)
    no_credentials = mode == "auto" and not wandb_has_credentials()
    if mode == "auto":
        mode = "offline" if no_credentials else "online"
    if mode != "online" and init.get("log_model"):  # before the offline notice: this run will not log at all
        raise ConfigError(
            f"logger.wandb.log_model={init['log_model']} uploads checkpoints, which an offline W&B run cannot do; log in "
            "(`wandb login` or WANDB_API_KEY) and set logger.wandb.mode=online, or leave log_model out (checkpoints "
            "stay in <run>/checkpoints)")
    if no_credentials:
        log.warning(
            "W&B: no credentials, logging offline to %s/wandb; upload later with `wandb sync %s/wandb/offline-run-*`",
            save_dir,
            save_dir,
        )
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    return LabWandbLogger(save_dir=save_dir, project=project, offline=mode != "online", **init)


def dashboard_step(trainer, in_batch_end: bool = False) -> int:
    """The step of the last trained batch's scalars (loss/d, loss/g, ...) on every logger.

    Lightning logs a batch's scalars at `_batches_that_stepped` right after on_train_batch_end, then counts
    the batch. Grids and evaluations logged at that same step sit beside the losses they follow on the
    dashboards' x-axis (trainer.global_step counts every optimizer step: twice as far with n_critic=1), keep
    TensorBoard's steps from going backwards, and stay with the rows a resume keeps (step < checkpoint's).
    """
    batches = trainer.fit_loop.epoch_loop._batches_that_stepped
    return batches if in_batch_end else max(batches - 1, 0)


def _wandb_config(logger: WandbLogger, config: dict) -> None:
    logger.experiment.config.update(config, allow_val_change=True)


def _tensorboard_config(logger: TensorBoardLogger, config: dict) -> None:
    """The config as TensorBoard hparams, one per dotted key (`optimizer.lr_g`, as on the command line).

    Only the session-start record: with no experiment record, TensorBoard's HPARAMS tab takes the metric
    columns from every scalar the runs logged and the hparams from every run, so a sweep's jobs line up.
    (Lightning's log_hyperparams would also log a placeholder `hp_metric` scalar.)
    """
    from torch.utils.tensorboard.summary import hparams

    flat = {key: _hparam_value(value) for key, value in flatten(config, keep_empty=True).items()}
    _experiment, session_start, _session_end = hparams(flat, {})
    logger.experiment._get_file_writer().add_summary(session_start)
    logger.hparams.update(config)  # and <run>/tensorboard/hparams.yaml, as Lightning's log_hyperparams would


def _hparam_value(value):
    # TensorBoard takes numbers and strings; to it a bool is a number, and lists and None have no type.
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return value if isinstance(value, (int, float, str)) else str(value)


# How each dashboard takes the run config and a PNG; loggers not listed (CSV) take neither.
CONFIG_WRITERS: dict[type, Callable[[Logger, dict], None]] = {
    WandbLogger: _wandb_config,
    TensorBoardLogger: _tensorboard_config,
}


@rank_zero_only  # other DDP ranks hold placeholder experiments
def log_run_config(loggers: Iterable[Logger], config: dict) -> None:
    """The full resolved config on every dashboard (the module saves no hyperparameters itself)."""
    for logger in loggers:
        writer = _writer_for(CONFIG_WRITERS, logger)
        if writer is not None:
            writer(logger, config)


def _writer_for(writers: dict, logger: Logger):
    return next((writer for kind, writer in writers.items() if isinstance(logger, kind)), None)


def _wandb_png(logger: WandbLogger, key: str, path: Path, step: int | None, caption: str | None) -> None:
    # A path, not pixels: W&B copies the file itself into the run's media folder.
    logger.log_image(key, [str(path)], step=step, **({"caption": [caption]} if caption else {}))


def _tensorboard_png(logger: TensorBoardLogger, key: str, path: Path, step: int | None, caption: str | None) -> None:
    pixels = png_pixels(path)
    logger.experiment.add_image(key, pixels, global_step=step, dataformats="HW" if pixels.ndim == 2 else "HWC")


def png_pixels(path: str | os.PathLike) -> np.ndarray:
    """The PNG's pixels as uint8 (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA; palette/16-bit files as RGBA."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGBA")
        return np.asarray(image)


PNG_WRITERS: dict[type, Callable[[Logger, str, Path, int | None, str | None], None]] = {
    WandbLogger: _wandb_png,
    TensorBoardLogger: _tensorboard_png,
}


def _show_file(writers: dict, loggers: Iterable[Logger], key: str, path: str | os.PathLike, step: int | None,
               caption: str | None) -> None:
    for logger in loggers:
        writer = _writer_for(writers, logger)
        if writer is not None:
            writer(logger, key, Path(path), step, caption)


def show_png(loggers: Iterable[Logger], key: str, path: str | os.PathLike, step: int | None = None,
             caption: str | None = None) -> None:
    """Show the PNG at `path` under `key` on every logger that shows images: W&B gets the file, TensorBoard
    its decoded pixels. Pass the file the lab wrote, never the tensor it came from."""
    _show_file(PNG_WRITERS, loggers, key, path, step, caption)


def write_png_and_show(path: str | os.PathLike, write: Callable[[Path], None], loggers: Iterable[Logger], key: str,
                       step: int | None = None, caption: str | None = None) -> Path:
    """`write(tmp)` writes the PNG to a temp path, renamed over `path` when whole; then `show_png` of that file."""
    path = Path(path)
    with replaced_atomically(path) as tmp:
        write(tmp)
    show_png(loggers, key, path, step, caption)
    return path


def _wandb_animation(logger: WandbLogger, key: str, path: Path, step: int | None, caption: str | None) -> None:
    import wandb

    logger.log_metrics({key: wandb.Video(str(path), caption=caption)}, step=step)  # the file itself, copied by W&B


def _tensorboard_animation(logger: TensorBoardLogger, key: str, path: Path, step: int | None, caption: str | None) -> None:
    """The GIF's own bytes as an image summary: TensorBoard's image plugin hands the encoded image to the browser,
    which plays a GIF (torch's add_video writes its GIFs the same way, through moviepy, which the lab does not need)."""
    from PIL import Image
    from torch.utils.tensorboard.summary import Summary

    with Image.open(path) as animation:
        width, height, grey = animation.width, animation.height, animation.mode == "L"
    image = Summary.Image(height=height, width=width, colorspace=1 if grey else 3, encoded_image_string=path.read_bytes())
    logger.experiment._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=key, image=image)]), step)


ANIMATION_WRITERS: dict[type, Callable[[Logger, str, Path, int | None, str | None], None]] = {
    WandbLogger: _wandb_animation,
    TensorBoardLogger: _tensorboard_animation,
}


def show_animation(loggers: Iterable[Logger], key: str, path: str | os.PathLike, step: int | None = None,
                   caption: str | None = None) -> None:
    """Show the GIF at `path` under `key` on every logger that plays animations (W&B and TensorBoard: the file)."""
    _show_file(ANIMATION_WRITERS, loggers, key, path, step, caption)


def summarize_wandb_run(run, output_dir: str, train_time_s: float | None = None, rollbacks: list[dict] | None = None
                        ) -> None:
    """Final summary of the W&B run: `last/<metric>` and `best/<metric>` from the run's metrics.csv; with the
    divergence guard on, `rollbacks` (how many, 0 too: a column the runs table sorts and filters by) and the G
    steps where they began, as status.json's `rollbacks` records them."""
    metrics_csv = Path(output_dir) / "metrics.csv"
    if not metrics_csv.exists():
        return
    series = read_metrics(metrics_csv)
    summary = {f"last/{k}": v for k, v in last_values(series).items()}
    summary.update({f"best/{k}": v for k, v in best_values(series).items()})
    if train_time_s is not None:
        summary["train_time_s"] = train_time_s
    if rollbacks is not None:
        summary["rollbacks"] = len(rollbacks)
        if rollbacks:
            summary["rollbacks_diverged_at_g_step"] = [r["diverged_at_g_step"] for r in rollbacks]
    run.summary.update(summary)
