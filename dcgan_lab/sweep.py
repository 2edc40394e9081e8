"""Hydra glue: what a job knows about the sweep it belongs to (from Hydra's runtime config), the end-of-sweep
summary, and what a job hands back to the sweeper. The run folder itself (status.json included) is run_folder's."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode

from dcgan_lab.run_folder import STATUS_FILE, read_status

log = logging.getLogger(__name__)

def _hydra():
    return HydraConfig.get() if HydraConfig.initialized() else None


def in_multirun() -> bool:
    hydra = _hydra()
    return hydra is not None and hydra.mode == RunMode.MULTIRUN


def job_overrides() -> list[str]:
    """This job's overrides (command line + sweep params), e.g. ['ablation=hinge', 'seed=0']."""
    hydra = _hydra()
    return list(hydra.overrides.task) if hydra is not None else []


def sweep_group() -> str | None:
    """In a multirun: '<sweep name>-<date>-<time>' (sweep name from +sweep=..., else 'multirun'); else None."""
    if not in_multirun():
        return None
    hydra = _hydra()
    return group_name(hydra.runtime.choices.get("sweep"), hydra.sweep.dir)


def group_name(sweep_name: str | None, sweep_dir: str | Path) -> str:
    """The W&B group of a sweep's jobs (and of its report run): the sweep's name and its folder's last two parts."""
    return f"{sweep_name or 'multirun'}-{'-'.join(Path(sweep_dir).parts[-2:])}"


def job_name() -> str | None:
    """The job folder's name (its overrides) in a multirun, else None (W&B picks one)."""
    hydra = _hydra()
    if hydra is None or not in_multirun():
        return None
    return hydra.job.override_dirname or f"job{hydra.job.num}"


def folder_not_given() -> str | None:
    """The option that would have chosen this run's folder ("hydra.run.dir", or "hydra.sweep.dir" for a sweep's
    jobs) when the command line did not give it, so Hydra made a new timestamped folder; None when it did, or
    outside Hydra (train(cfg) called directly: the caller chose the folder)."""
    hydra = _hydra()
    if hydra is None:
        return None
    option = "hydra.sweep.dir" if in_multirun() else "hydra.run.dir"
    return None if any(o.startswith(f"{option}=") for o in hydra.overrides.hydra) else option


def resume_command(run_dir: str | Path) -> str:
    """What continues this run where its last.ckpt stopped: resume=true in its folder, or for a sweep's job the
    sweep's command again with resume=true in the sweep's folder (finished jobs are skipped, the others continue)."""
    hydra = _hydra()
    if hydra is not None and in_multirun():
        return f"the sweep's command plus resume=true hydra.sweep.dir={hydra.sweep.dir}"
    return f"resume=true hydra.run.dir={run_dir}"


def jobs_at_once() -> int:
    """How many jobs of this multirun run at once on the one console: the joblib launcher's n_jobs
    (hydra/launcher=local or gpu; -1 = one per core). 1 for a single run, for sequential jobs, and for SLURM,
    where each job writes its own log."""
    hydra = _hydra()
    if hydra is None or not in_multirun() or "joblib" not in str(hydra.launcher.get("_target_", "")).lower():
        return 1
    n_jobs = int(hydra.launcher.get("n_jobs") or 1)
    return n_jobs if n_jobs > 0 else max((os.cpu_count() or 1) + 1 + n_jobs, 1)  # joblib: -1 = all cores


class SweepSummary(Callback):
    """Hydra callback: at the end of a sweep, one line saying how many jobs failed and where to look."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = {path.parent: read_status(path.parent) for path in sweep_dir.rglob(STATUS_FILE)}
        failed = {job: s for job, s in statuses.items() if s and s.get("status") != "ok"}
        if failed:
            first_job, first = next(iter(sorted(failed.items())))
            log.warning(
                "%d of %d jobs failed; `python -m dcgan_lab.report %s` lists them all. First, in %s: %s",
                len(failed), len(statuses), sweep_dir, first_job.name, first.get("error", "?").splitlines()[0],
            )
        else:
            log.info("All %d jobs finished. Report: python -m dcgan_lab.report %s", len(statuses), sweep_dir)


def sweep_return(cfg, result: dict | None):
    """What a job hands back to Hydra's sweeper: the run's result, or, when the config names an `objective`
    (Optuna sweeps), that metric's last value. None marks the trial failed (job failed or metric never logged)."""
    objective = cfg.get("objective")
    if objective is None or result is None:
        return result
    value = result["metrics"].get(objective)
    if value is None:
        log.error("objective=%s was not logged by this job (logged: %s): the trial counts as failed.",
                  objective, ", ".join(sorted(result["metrics"])))
    return value
