"""Reading a finished run's results: its metrics.csv series and Hydra overrides (its status: run_folder).

Shared by the W&B summary (best/last metrics at the end of a job) and the sweep report, so both agree on
what "final" and "best" mean.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import yaml

from dcgan_lab.errors import DataError


# Which way is better: a metric's entry in dcgan_lab/metrics/registry.py says it for every scalar it logs; the run's
# own bookkeeping is here. Anything else (losses, D(x), grad norms) has no "best": a lower GAN loss is not a better GAN.
RUN_DIRECTIONS = {"train_time_s": -1}  # status.json: the job's wall time
# Step-like bookkeeping columns: never curves, never table columns.
STEP_COLUMNS = ("step", "epoch", "g_step")


def direction(metric: str) -> int:
    """-1 if lower is better, +1 if higher is better, 0 if neither (no best is marked)."""
    # Imported here: dcgan_lab.metrics loads torch, and Hydra imports this module (via sweep.py) before any job.
    from dcgan_lab.metrics import registry

    return RUN_DIRECTIONS.get(metric) or registry.direction(metric)


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """metrics.csv as Lightning's CSVLogger wrote it: one sparse row per log call."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def read_metrics(path: str | Path, epochs: int | None = None) -> dict[str, list[tuple[float, float]]]:
    """metrics.csv -> {metric: [(G step, value), ...]}: `metric_series` of its rows."""
    return metric_series(read_rows(path), epochs)


def metric_series(rows: list[dict[str, str]], epochs: int | None = None) -> dict[str, list[tuple[float, float]]]:
    """metrics.csv's rows -> {metric: [(G step, value), ...]} in file order; with `epochs`, only what was logged in the
    first `epochs` epochs (rows without an epoch, e.g. throughput, are left out then, except those logged before
    the first epoch's: the networks' cost/* at the start).

    Lightning's CSVLogger writes one sparse row per log call, and its `step` column means different things
    (batches for training-step logs, optimizer steps for callbacks that log at trainer.global_step). So the
    x-axis is the module's own `g_step` (G iterations) where the row has it; a row without it (an evaluation
    at the end of an epoch) sits at the last G step logged in its epoch; else Lightning's step.
    Empty and non-finite cells are skipped.
    """
    if epochs is not None:
        first = next((i for i, row in enumerate(rows) if _float(row.get("epoch")) is not None), len(rows))
        rows = rows[:first] + [row for row in rows[first:] if (epoch := _float(row.get("epoch"))) is not None and epoch < epochs]
    last_g_step_of_epoch = epoch_end_g_steps(rows)
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        step = _float(row.get("g_step"))
        if step is None:
            step = last_g_step_of_epoch.get(_float(row.get("epoch")), _float(row.get("step")))
        for name, cell in row.items():
            value = _float(cell)
            if name in STEP_COLUMNS or name is None or value is None:
                continue
            series.setdefault(name, []).append((step if step is not None else math.nan, value))
    return series


def epoch_end_g_steps(rows: list[dict[str, str]]) -> dict[float, float]:
    """{epoch index: the G step it ended at}: the last g_step its rows logged (the step logs each epoch's last batch)."""
    return epoch_end_values(rows, "g_step")


def epoch_end_values(rows: list[dict[str, str]], column: str) -> dict[float, float]:
    """{epoch index: the highest value of `column` its rows logged}: for a count that only grows (g_step, the
    train_time_s that callbacks.throughput logs at each epoch's end), where the epoch ended."""
    ends: dict[float, float] = {}
    for row in rows:
        epoch, value = _float(row.get("epoch")), _float(row.get(column))
        if epoch is not None and value is not None:
            ends[epoch] = max(value, ends.get(epoch, value))
    return ends


def logged_epochs(rows: list[dict[str, str]]) -> int:
    """How many epochs metrics.csv's rows cover (its highest epoch index + 1; 0 for none)."""
    epochs = [epoch for row in rows if (epoch := _float(row.get("epoch"))) is not None]
    return int(max(epochs)) + 1 if epochs else 0


def final_logged(path: str | Path) -> dict[str, float]:
    """What a fit's final metrics (trainer.callback_metrics at its end) held, read back from the metrics.csv it
    wrote: each column's last finite value, g_step too; not Lightning's step and epoch, nor the networks' cost/*,
    which NetworkSummary hands to the loggers only."""
    final = {}
    for row in read_rows(path):
        for name, cell in row.items():
            if name is not None and name not in ("step", "epoch") and not name.startswith("cost/") \
                    and (value := _float(cell)) is not None:
                final[name] = value
    return final


def last_values(series: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    return {name: points[-1][1] for name, points in series.items() if points}


def best_values(series: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    """Best value over the run for every metric with a direction."""
    best = {}
    for name, points in series.items():
        sign = direction(name)
        if sign and points:
            values = [value for _, value in points]
            best[name] = max(values) if sign > 0 else min(values)
    return best


def job_dirs(sweep_dir: str | Path, required: bool = True) -> list[Path]:
    """Every job folder under a sweep, in path order: each folder where Hydra wrote .hydra/overrides.yaml, at any depth
    (override values with '/' nest folders; seeds run later into <sweep>/more_seeds join from below it). A folder with
    none is refused, unless not `required`."""
    jobs = [overrides.parent.parent for overrides in sorted(Path(sweep_dir).rglob(".hydra/overrides.yaml"))]
    if not jobs and required:
        raise DataError(f"no Hydra jobs under {sweep_dir} (no */.hydra/overrides.yaml): pass a folder written by "
                        "`python train.py -m ...`.")
    return jobs


def read_overrides(run_dir: str | Path) -> list[str]:
    """The job's command-line and sweep overrides, as Hydra recorded them in .hydra/overrides.yaml."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.exists():
        return []
    try:
        overrides = yaml.safe_load(path.read_text()) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"{path} is unreadable ({str(exc).splitlines()[0]}): restore it (Hydra writes one list of "
                        "overrides) or move that job folder out of the sweep") from None
    if not isinstance(overrides, list):
        raise DataError(f"{path} holds a {type(overrides).__name__}, not Hydra's list of overrides: restore it or "
                        "move that job folder out of the sweep")
    return [str(item) for item in overrides]


def _float(cell) -> float | None:
    if cell is None or cell == "":
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
