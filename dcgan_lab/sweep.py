"""What a job knows about the sweep it belongs to (from Hydra's runtime config), and its status record."""
from __future__ import annotations

import logging
import time
import traceback
from datetime import datetime
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode

from dcgan_lab.errors import is_refused_input, lab_error_behind
from dcgan_lab.runs import STATUS_FILE, read_status, write_status

log = logging.getLogger(__name__)

def _hydra():
    return HydraConfig.get() if HydraConfig.initialized() else None


def in_multirun() -> bool:
    hydra = _hydra()
    return hydra is not None and hydra.mode == RunMode.MULTIRUN


def job_overrides() -> list[str]:
    """This job's overrides (command line + sweep params), e.g. ['+ablation=hinge', 'seed=0']."""
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


def run_recorded(train, cfg, output_dir: str) -> dict | None:
    """Run train(cfg) and write <output_dir>/status.json: ok with times and final metrics, or failed with the error.

    A single run whose input is refused (a ConfigError or DataError: a bad value, unusable data or checkpoint)
    records nothing: bad input leaves nothing that looks like a run behind. In a multirun every job records its
    outcome, a refused one too, so the report can say why it failed; a failure is logged and swallowed there, so
    one bad job neither stops the sweep nor loses the other jobs' results. In a single run it is re-raised for the
    CLI to report.
    """
    import torch  # here, not at module level: Hydra imports this module (SweepSummary) before any job
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    # Under DDP every rank runs this job; only rank 0 writes the job's status.
    record = write_status if rank_zero_only.rank == 0 else (lambda *_: None)
    started = time.perf_counter()
    common = {
        "overrides": job_overrides(),
        "started_at": datetime.now().isoformat(timespec="seconds"),
        "torch_threads": torch.get_num_threads(),  # parallel jobs (hydra/launcher=local) should share the cores
    }
    try:
        result = train(cfg)
    except Exception as exc:
        cause = lab_error_behind(exc) or exc
        error = f"{type(cause).__name__}: {cause}"
        if in_multirun() or not is_refused_input(exc):
            record(output_dir, {
                **common,
                "status": "failed",
                "error": error,
                "traceback": traceback.format_exc(),
                "wall_time_s": time.perf_counter() - started,
            })
        if in_multirun():
            log.error("Job failed, the sweep goes on: %s (details in %s/status.json)", error, output_dir)
            return None
        raise
    record(output_dir, {
        **common,
        "status": "ok",
        "wall_time_s": time.perf_counter() - started,
        "train_time_s": result["metrics"].get("train_time_s"),
        "g_steps": result.get("g_steps"),
        "final_metrics": result["metrics"],
    })
    return result


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
