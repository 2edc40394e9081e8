"""Loggers. The CSV in the run folder is always written; W&B goes online only with credentials."""
from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger

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


def wandb_logger(save_dir: str, project: str, mode: str = "auto", **kwargs) -> WandbLogger:
    """mode: online | offline | auto (online with credentials, else offline; never prompts for a login)."""
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
    return WandbLogger(save_dir=save_dir, project=project, offline=mode != "online", **kwargs)
