"""The run folder's one owner: claiming it (one run, one folder: fresh runs get a folder of their own; only a
resumed run writes into an old one), resuming in it (checkpoint, temp files of killed saves, the metrics.csv rows
a resume keeps) and its status.json (ok with times and final metrics, or failed with the error).

Imported by dcgan_lab/__init__ for the `unique_dir` resolver, so it stays free of torch/lightning imports.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import signal
import socket
import time
import traceback
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

from dcgan_lab.atomic import remove_stale_temp_files, write_text_atomically
from dcgan_lab.errors import AlreadyFinished, ConfigError, Interrupted, is_refused_input, lab_error_behind

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"

# What a run leaves behind; a folder holding any of these belongs to a run.
RUN_MARKERS = ("config.yaml", "metrics.csv", "checkpoints", "samples")

_chosen: dict[str, str] = {}


def unique_dir(path: str) -> str:
    """`path`, or `path_1`, `path_2`, ... if it already exists (two runs started in the same second).

    Remembered per process: Hydra may resolve hydra.run.dir more than once, after creating it.
    """
    if path not in _chosen:
        candidate, n = path, 0
        while Path(candidate).exists():
            n += 1
            candidate = f"{path}_{n}"
        _chosen[path] = candidate
    return _chosen[path]


def holds_a_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_MARKERS)


def continues_in_place(cfg, output_dir: Path) -> bool:
    """Whether this run continues the one in output_dir: resume=true, or a ckpt_path inside that folder."""
    if cfg.get("resume"):
        return True
    ckpt_path = cfg.get("ckpt_path")
    return ckpt_path is not None and Path(ckpt_path).resolve().is_relative_to(output_dir.resolve())


LOCK_FILE = ".lock"  # held (flock) by the run writing into the folder, removed when it ends


@contextmanager
def writing_into(output_dir: Path) -> Iterator[None]:
    """Holds an exclusive lock on <output_dir>/.lock while this process's run writes into the folder: a second run
    in the same folder at the same time (the same resume=true command started twice, two fresh runs given one
    hydra.run.dir) is refused with one line instead of mixing its checkpoints, grids and metrics.csv rows with the
    first's. The OS drops the lock when the process ends, however it ends (kill -9 too). Where the file system
    cannot lock (some network mounts), the run goes on unguarded."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    created = not output_dir.exists()  # Hydra makes the folder; a direct caller of main may not have
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise ConfigError(
                f"{output_dir} is being written by another run right now ({holder}): two runs in one folder would mix "
                "their files. Let that one finish, or stop it (Ctrl-C saves a checkpoint) and then resume=true"
            ) from None
        except OSError:  # no locks on this file system
            handle.close()
            yield
            return
        try:
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break  # else the run that held it removed it as we opened it: lock the file now there
        except FileNotFoundError:
            pass
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before the lock goes: nothing is left behind in the folder
        handle.close()
        if created and not any(output_dir.iterdir()):  # a run refused before it wrote anything
            output_dir.rmdir()


def refuse_taken_folder(cfg, output_dir: Path) -> None:
    if holds_a_run(output_dir) and not continues_in_place(cfg, output_dir):
        raise ConfigError(
            f"{output_dir} already holds a run; a new run never writes into it. "
            "Continue that run with resume=true, or leave hydra.run.dir unset to get a fresh folder"
        )


def resolve_resume(cfg, output_dir: Path, check_folder: bool = True, folder_not_given: str | None = None
                   ) -> tuple[str | None, bool]:
    """(checkpoint to start from, whether this run continues the one in output_dir).

    ckpt_path=<file> resumes from that file (into this run's folder); resume=true continues
    output_dir/checkpoints/last.ckpt in place, or starts fresh when no checkpoint is there yet
    (so a preempted SLURM job can be requeued with the same command). resume=true in a folder the command line
    did not choose (`folder_not_given` names the option that would have: a new timestamped folder) is refused:
    that folder can never hold a checkpoint.
    """
    if cfg.get("resume") and cfg.get("ckpt_path") is None and folder_not_given:
        raise ConfigError(resume_without_folder(output_dir, folder_not_given))
    if check_folder:
        refuse_taken_folder(cfg, output_dir)
        if continues_in_place(cfg, output_dir):
            clear_killed_writes(output_dir)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is not None and Path(str(ckpt_path)).expanduser().is_dir():  # a run folder: its last.ckpt
        from dcgan_lab.export import pick_checkpoint

        ckpt_path = str(pick_checkpoint(ckpt_path))
    if cfg.get("resume") and ckpt_path is None:
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            ckpt_path = str(last)
        else:
            log.warning("resume=true but %s does not exist: starting from scratch", last)
    return ckpt_path, continues_in_place(cfg, output_dir)


def resume_without_folder(output_dir: Path, option: str) -> str:
    """The one line for resume=true in a new folder; for a single run it names the newest run beside it that has
    a checkpoint (outputs/<date>/<time>/checkpoints/last.ckpt)."""
    if option == "hydra.sweep.dir":
        return ("resume=true continues each job of a sweep in its own folder, but this sweep got a new one: add "
                "hydra.sweep.dir=<the sweep's folder> (multirun/<date>/<time>).")
    runs = sorted(output_dir.parent.parent.glob("*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    example = f"hydra.run.dir={runs[-1].parent.parent} (the newest with a checkpoint)" if runs else \
        "hydra.run.dir=outputs/<date>/<time>"
    return (f"resume=true continues the run in hydra.run.dir, but this run got a new folder ({output_dir}) with "
            f"nothing to resume: add the folder of the run to continue, e.g. {example}.")


def clear_killed_writes(output_dir: Path) -> None:
    """A run killed mid-save leaves `.<name>.<pid>.tmp` files; the next start in its folder removes them."""
    removed = remove_stale_temp_files(output_dir)
    if removed:
        places = sorted({f"{p.parent.relative_to(output_dir)}/" for p in removed})
        log.info("removed %d temp file(s) left by killed saves in %s (%s)", len(removed), output_dir, ", ".join(places))


def keep_metrics_on_resume(csv_logger, checkpoint: dict) -> None:
    """CSVLogger empties metrics.csv when its folder is not empty; keep the rows logged before the checkpoint.

    Rows logged after the checkpoint (before a kill) are dropped: the resumed run logs those steps again.
    """
    path = Path(csv_logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    reader = csv.DictReader(io.StringIO(path.read_text()))
    header = list(reader.fieldnames or [])
    rows = rows_before_checkpoint(list(reader), checkpoint)
    experiment = csv_logger.experiment  # creating the writer deletes the old file
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue())
    experiment.metrics_keys = list(header)  # later rows append under the same header


def rows_before_checkpoint(rows: list[dict], checkpoint: dict) -> list[dict]:
    """The metrics.csv rows (in file order, which is logging order) that were logged before `checkpoint` was saved.

    A row's `step` counts different things depending on who logged it: Lightning writes the module's rows (they
    carry `g_step`) and its learning-rate rows at `_batches_that_stepped` (the index of the batch they belong to),
    evaluations sit at the step of the losses they follow (loggers.dashboard_step), the throughput callback writes
    at `trainer.global_step` (optimizer steps, n_critic + 1 per G step). So each
    row is judged by what it carries, against the batches the checkpoint holds: GANModule's `batches_seen`, which
    counts a batch once its training step is done, wherever the checkpoint is saved (Lightning's own counter lags
    by one in a checkpoint saved at a batch's end, e.g. Ctrl-C's, or at validation end, and gains the one back on
    restart):
    - a training row (`g_step`) was logged before the checkpoint if its step is below the checkpoint's batches;
    - an evaluation row (`epoch`, no `g_step`) if its epoch had finished when the checkpoint was saved;
    - every row after the first such row logged after the checkpoint came after it too (the file is in logging
      order), every row before the last such row logged before it came before it;
    - a row between those two (an epoch-end or batch-start log) if its step is below the checkpoint's batches
      or is the checkpoint's own optimizer step (epoch-end logs are written before the checkpoint).
    """
    loops = checkpoint.get("loops", {}).get("fit_loop", {})
    batches = checkpoint.get("batches_seen")
    if batches is None:  # a checkpoint not written by GANModule: Lightning's count, right at epoch ends
        batches = loops.get("epoch_loop.state_dict", {}).get("_batches_that_stepped", 0)
    epochs_finished = loops.get("epoch_progress", {}).get("current", {}).get("processed", 0)
    optimizer_steps = checkpoint.get("global_step", 0)

    def logged_before(row: dict) -> bool | None:
        """For a training or evaluation row, whether it was logged before the checkpoint; None for other rows."""
        if _number(row.get("g_step")) is not None:
            return _number(row.get("step"), default=0) < batches
        epoch = _number(row.get("epoch"))
        return None if epoch is None else epoch < epochs_finished

    verdicts = [logged_before(row) for row in rows]
    last_before = max((i for i, before in enumerate(verdicts) if before), default=-1)
    first_after = min((i for i, before in enumerate(verdicts) if before is False), default=len(rows))
    kept = []
    for i, row in enumerate(rows[:first_after]):
        step = _number(row.get("step"), default=0)
        if i <= last_before or step < batches or step == optimizer_steps:
            kept.append(row)
    return kept


def _number(cell, default=None):
    try:
        return float(cell) if cell not in (None, "") else default
    except ValueError:
        return default


# ---- status.json -------------------------------------------------------------------------------
def read_status(run_dir: str | Path) -> dict | None:
    """The run's status.json; None where there is none yet. One that cannot be read (edited, damaged; it is written
    atomically, so never half-written by the lab) reads as a failed run saying so, not as a result."""
    path = Path(run_dir) / STATUS_FILE
    if not path.exists():
        return None
    try:
        status = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return {"status": "failed", "error": f"{STATUS_FILE} is unreadable ({type(exc).__name__}: {exc})"}
    if not isinstance(status, dict):
        return {"status": "failed", "error": f"{STATUS_FILE} holds a {type(status).__name__}, not the run's record"}
    return status


def write_status(run_dir: str | Path, status: dict) -> Path:
    """Atomic write, so a report never reads half a file from a job still finishing."""
    path = Path(run_dir) / STATUS_FILE
    write_text_atomically(json.dumps(status, indent=2, default=str), path)
    return path


def run_recorded(train, cfg, output_dir: str) -> dict | None:
    """Run train(cfg) and write <output_dir>/status.json: ok with times and final metrics, failed with the error, or
    interrupted (Ctrl-C, SIGTERM) with the G steps done and where to continue (the process then stops, a sweep too).

    A single run whose input is refused (a ConfigError or DataError: a bad value, unusable data or checkpoint)
    records nothing: bad input leaves nothing that looks like a run behind. In a multirun every job records its
    outcome, a refused one too, so the report can say why it failed; a failure is logged and swallowed there, so
    one bad job neither stops the sweep nor loses the other jobs' results. In a single run it is re-raised for the
    CLI to report.
    """
    import torch  # here, not at module level: this module stays free of torch/lightning imports
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from dcgan_lab.sweep import in_multirun, job_overrides, jobs_at_once, resume_command, sweep_stopped

    # Under DDP every rank runs this job; only rank 0 writes the job's status.
    record = write_status if rank_zero_only.rank == 0 else (lambda *_: None)
    started = time.perf_counter()
    common = {
        "overrides": job_overrides(),
        "started_at": datetime.now().isoformat(timespec="seconds"),
        "torch_threads": torch.get_num_threads(),  # parallel jobs (hydra/launcher=local) should share the cores
    }
    if (stopped_by := sweep_stopped()) is not None:  # a parallel sweep stopped before this job began
        message = (f"not started: {stopped_by} stopped the sweep before this job began; continue with "
                   f"{resume_command(output_dir)}")
        log.warning(message)
        record(output_dir, {**common, "status": "interrupted", "signal": stopped_by, "error": message,
                            "not_started": True, "wall_time_s": 0.0, "train_time_s": 0.0, "g_steps": 0})
        return None
    try:
        result = train(cfg)
    except Interrupted as stop:  # a signal, not an error: recorded, then the process stops (a sweep too)
        record(output_dir, {
            **common,
            "status": "interrupted",
            "signal": signal.Signals(stop.signum).name,
            "error": str(stop),
            "wall_time_s": time.perf_counter() - started,
            "train_time_s": stop.train_time_s,
            "g_steps": stop.g_steps,
        })
        if jobs_at_once() > 1:  # a parallel job: its worker goes on (an exception would make joblib kill the others
            return None         # mid-save); the sweep's own handler ends the sweep (sweep.SweepSummary)
        raise
    except Exception as exc:
        cause = lab_error_behind(exc) or exc
        error = f"{type(cause).__name__}: {cause}"
        if in_multirun() and isinstance(cause, AlreadyFinished):  # a resubmitted sweep: finished jobs stay as they are
            log.info("Job already finished, its results are kept: %s", cause)
            return None
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
        "rollbacks": result.get("rollbacks", []),  # the divergence guard's (action=rollback): where, and to what
        "final_metrics": result["metrics"],
    })
    return result
