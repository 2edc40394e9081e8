"""The sweep report on W&B: one run named `report` in the sweep's group, beside the runs of its jobs.

    python -m dcgan_lab.report <sweep dir> [--wandb auto|online|offline|off]

It holds the table of report.csv as a W&B table (`report/table`) and the report's figures
(`report/curves`, `report/effects`, `report/samples`) as the very PNG files written into the sweep folder. Offline it lands
in `<sweep>/wandb/offline-run-*`, for `wandb sync` later, as the jobs' runs do.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from dcgan_lab.errors import ConfigError
from dcgan_lab.sweep import group_name

log = logging.getLogger(__name__)

# auto: log when the sweep's jobs logged to W&B, in their mode; online/offline: log anyway, in that mode.
WANDB_CHOICES = ("auto", "online", "offline", "off")
DEFAULT_PROJECT = "dcgan_lab"  # conf/logger/wandb.yaml's project: for sweeps whose jobs did not use W&B


@dataclass
class ReportDestination:
    project: str
    group: str
    mode: str  # online | offline | auto (online with credentials)
    entity: str | None = None


def report_destination(sweep_dir: str | Path, choice: str = "auto") -> ReportDestination | None:
    """Where the report run goes: the project, entity and group the jobs used; None when it is not wanted."""
    if choice not in WANDB_CHOICES:
        raise ConfigError(f"--wandb={choice}: use one of {', '.join(WANDB_CHOICES)}")
    if choice == "off":
        return None
    sweep_dir = Path(sweep_dir)
    jobs = [_job_settings(hydra_yaml.parent.parent) for hydra_yaml in sorted(sweep_dir.rglob(".hydra/hydra.yaml"))]
    used_wandb = [(wandb, hydra) for wandb, hydra in jobs if wandb is not None]
    if choice == "auto" and not used_wandb:
        return None
    wandb, hydra = (used_wandb or jobs or [(None, {})])[0]
    wandb = wandb or {}
    sweep_name = ((hydra.get("runtime") or {}).get("choices") or {}).get("sweep")
    # The jobs' own group: set in their config, else what dcgan_lab.sweep.sweep_group() named it.
    group = wandb.get("group") or group_name(sweep_name, (hydra.get("sweep") or {}).get("dir") or sweep_dir)
    return ReportDestination(
        project=wandb.get("project") or DEFAULT_PROJECT,
        group=group,
        mode=(wandb.get("mode") or "auto") if choice == "auto" else choice,
        entity=wandb.get("entity"),
    )


def _job_settings(job_dir: Path) -> tuple[dict | None, dict]:
    """(the job's logger.wandb settings or None, its Hydra runtime section)."""
    hydra = _read_yaml(job_dir / ".hydra" / "hydra.yaml").get("hydra") or {}
    # config.yaml is the resolved run config; .hydra/config.yaml is there even when the job failed early.
    config = _read_yaml(job_dir / "config.yaml") or _read_yaml(job_dir / ".hydra" / "config.yaml")
    return (config.get("logger") or {}).get("wandb"), hydra


def _read_yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def read_table(report_csv: str | Path) -> tuple[list[str], list[list]]:
    """report.csv as (columns, rows); a column whose every filled cell is a number holds numbers, empty cells None."""
    with open(report_csv, newline="") as handle:
        columns, *rows = list(csv.reader(handle))
    for index in range(len(columns)):
        cells = [row[index] for row in rows]
        numbers = [_number(cell) for cell in cells]
        if all(number is not None for cell, number in zip(cells, numbers) if cell != ""):
            for row, number in zip(rows, numbers):
                row[index] = number
    return columns, rows


def _number(cell: str) -> int | float | None:
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return None


def log_report_to_wandb(sweep_dir: str | Path, report_files: dict[str, Path], destination: ReportDestination) -> str:
    """One W&B run (job_type report) with the report's table and figures; returns where it went (folder or URL)."""
    from dcgan_lab.loggers import new_wandb_logger, show_png

    sweep_dir = Path(sweep_dir)
    folder = report_files["report.md"].parent  # the sweep folder, or a cut's folder in it (after_<N>_epochs/, ...)
    name = "report" if folder.resolve() == sweep_dir.resolve() else f"report {folder.name}"
    logger = new_wandb_logger(
        str(sweep_dir), destination.project, destination.mode, group=destination.group, name=name,
        tags=["report"], job_type="report", **({"entity": destination.entity} if destination.entity else {}),
    )
    run = logger.experiment
    try:
        run.config.update({"sweep_dir": str(sweep_dir.resolve())})
        columns, rows = read_table(report_files["report.csv"])
        logger.log_table("report/table", columns=columns, data=rows)
        for name in ("curves", "effects", "samples"):
            show_png([logger], f"report/{name}", report_files[f"{name}.png"], caption=f"{name}.png")
        where = str(Path(run.dir).parent) if run.offline else run.url
    finally:
        run.finish()
    return where


def report_to_wandb(sweep_dir: str | Path, report_files: dict[str, Path], choice: str = "auto") -> str | None:
    """The report on W&B when `choice` (and, for auto, the jobs) want it; returns where it went, else None."""
    destination = report_destination(sweep_dir, choice)
    if destination is None:
        return None
    return log_report_to_wandb(sweep_dir, report_files, destination)
