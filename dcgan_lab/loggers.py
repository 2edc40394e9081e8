"""Loggers. The CSV in the run folder is always written; W&B goes online only with credentials."""
from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger

from dcgan_lab.runs import best_values, last_values, read_metrics
from dcgan_lab.sweep import job_name, job_overrides, sweep_group

log = logging.getLogger(__name__)


def run_csv_logger(output_dir: str) -> CSVLogger:
    # name="" and version="" put metrics.csv and hparams.yaml directly in the run folder.
    return CSVLogger(save_dir=output_dir, name="", version="")


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
    group = group or sweep_group()
    name = name or job_name()
    # W&B rejects tags over 64 characters.
    tags = list(dict.fromkeys([*tags, *(override[:64] for override in job_overrides())]))
    mode = os.environ.get("WANDB_MODE", mode)
    if mode == "auto":
        mode = "online" if wandb_has_credentials() else "offline"
        if mode == "offline":
            log.warning(
                "W&B: no credentials, logging offline to %s/wandb; upload later with `wandb sync %s/wandb/offline-run-*`",
                save_dir,
                save_dir,
            )
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    return WandbLogger(
        save_dir=save_dir, project=project, offline=mode != "online", group=group, tags=tags, name=name, **kwargs
    )


def log_config_to_wandb(loggers: list, config: dict) -> None:
    """The full resolved config as the W&B run's config (the module saves no hyperparameters itself)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.config.update(config, allow_val_change=True)


def summarize_wandb_run(run, output_dir: str, train_time_s: float | None = None) -> None:
    """Final summary of the W&B run: `last/<metric>` and `best/<metric>` from the run's metrics.csv."""
    metrics_csv = Path(output_dir) / "metrics.csv"
    if not metrics_csv.exists():
        return
    series = read_metrics(metrics_csv)
    summary = {f"last/{k}": v for k, v in last_values(series).items()}
    summary.update({f"best/{k}": v for k, v in best_values(series).items()})
    if train_time_s is not None:
        summary["train_time_s"] = train_time_s
    run.summary.update(summary)
