"""Hydra glue: what a job knows about the sweep it belongs to (from Hydra's runtime config), the end-of-sweep
summary, and what a job hands back to the sweeper. The run folder itself (status.json included) is run_folder's."""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
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
        return sweep_resume_command(hydra.sweep.dir)
    return f"resume=true hydra.run.dir={run_dir}"


def sweep_resume_command(sweep_dir: str | Path) -> str:
    return f"the sweep's command plus resume=true hydra.sweep.dir={sweep_dir}"


def jobs_at_once() -> int:
    """How many jobs of this multirun run at once on the one console: the joblib launcher's n_jobs
    (hydra/launcher=local or gpu; -1 = one per core). 1 for a single run, for sequential jobs, and for SLURM,
    where each job writes its own log."""
    hydra = _hydra()
    if hydra is None or not in_multirun():
        return 1
    return parallel_jobs(hydra.launcher)


def parallel_jobs(launcher) -> int:
    """How many jobs the launcher config `launcher` (hydra.launcher) runs at once: joblib's n_jobs, else 1."""
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = int(launcher.get("n_jobs") or 1)
    return n_jobs if n_jobs > 0 else max((os.cpu_count() or 1) + 1 + n_jobs, 1)  # joblib: -1 = all cores


# In a sweep's folder while a signal stops it: the signal's name. Jobs that have not started yet read it and end at once.
STOP_MARKER = ".stopping"


def sweep_stopped() -> str | None:
    """The signal that is stopping this job's parallel sweep (SIGINT, SIGTERM), or None."""
    hydra = _hydra()
    if hydra is None or not in_multirun():
        return None
    marker = Path(hydra.sweep.dir) / STOP_MARKER
    try:
        return marker.read_text().strip() or "a signal"
    except OSError:
        return None


def _worker_pids() -> list[int]:
    """This process's joblib workers, on any OS: loky starts them as multiprocessing processes, and the sweep's
    process starts no other."""
    return [process.pid for process in multiprocessing.active_children()]


class SweepSummary(Callback):
    """Hydra callback: at the end of a sweep, one line saying how many jobs failed and where to look.

    A sweep whose jobs run in parallel (hydra/launcher=local or gpu) is stopped as a sequential one is: the first
    Ctrl-C or SIGTERM reaches every running job (a terminal's Ctrl-C already has; `kill` and `docker stop` signal
    only this process, so it passes the signal on; a job takes a repeat within a second for the same stop), each
    finishes its batch, saves last.ckpt and records `interrupted`; jobs not started yet record that they were not
    started; then one line and exit 128 + the signal's number. Without this, joblib ended the sweep with a
    traceback and killed the workers mid-save. A second signal stops at once."""

    def __init__(self):
        self._stopped_by: int | None = None
        self._previous_handlers: dict[int, object] = {}
        self._sweep_dir: Path | None = None

    def on_multirun_start(self, config, **kwargs) -> None:
        self._sweep_dir = Path(config.hydra.sweep.dir)
        (self._sweep_dir / STOP_MARKER).unlink(missing_ok=True)  # a resumed sweep's, from its stop
        if parallel_jobs(config.hydra.launcher) > 1 and threading.current_thread() is threading.main_thread():
            self._previous_handlers = {signum: signal.signal(signum, self._stop)
                                       for signum in (signal.SIGINT, signal.SIGTERM)}

    def _stop(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self._stopped_by is not None:  # the second: at once (joblib ends the workers)
            self._restore()
            log.warning("%s again: the sweep stops at once; running jobs may lose the batches since their last "
                        "checkpoint", name)
            raise SystemExit(128 + signum)
        self._stopped_by = signum
        log.warning("%s: each running job finishes its batch and saves checkpoints/last.ckpt; jobs not started yet are "
                    "skipped (%s again to stop at once)", name, "Ctrl-C" if signum == signal.SIGINT else name)
        self._sweep_dir.mkdir(parents=True, exist_ok=True)
        (self._sweep_dir / STOP_MARKER).write_text(name)
        for pid in _worker_pids():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _restore(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def on_multirun_end(self, config, **kwargs) -> None:
        self._restore()
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses = {path.parent: read_status(path.parent) for path in sweep_dir.rglob(STATUS_FILE)}
        if self._stopped_by is not None:
            (sweep_dir / STOP_MARKER).unlink(missing_ok=True)
            states = [s.get("status") if s else None for s in statuses.values()]
            not_started = sum(bool(s and s.get("not_started")) for s in statuses.values())
            failed = len(states) - states.count("ok") - states.count("interrupted")
            log.warning("the sweep was stopped by %s: %d of %d jobs finished, %d interrupted, %d not started%s; "
                        "continue with %s", signal.Signals(self._stopped_by).name, states.count("ok"), len(statuses),
                        states.count("interrupted") - not_started, not_started, f", {failed} failed" if failed else "",
                        sweep_resume_command(sweep_dir))
            raise SystemExit(128 + self._stopped_by)
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
