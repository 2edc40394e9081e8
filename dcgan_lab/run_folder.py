"""One run, one folder: fresh runs get a folder of their own; only a resumed run writes into an old one.

Imported by dcgan_lab/__init__ for the `unique_dir` resolver, so it stays free of torch/lightning imports.
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

from dcgan_lab.atomic import remove_stale_temp_files
from dcgan_lab.errors import ConfigError

log = logging.getLogger(__name__)

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


def refuse_taken_folder(cfg, output_dir: Path) -> None:
    if holds_a_run(output_dir) and not continues_in_place(cfg, output_dir):
        raise ConfigError(
            f"{output_dir} already holds a run; a new run never writes into it. "
            "Continue that run with resume=true, or leave hydra.run.dir unset to get a fresh folder"
        )


def resolve_resume(cfg, output_dir: Path, check_folder: bool = True) -> tuple[str | None, bool]:
    """(checkpoint to start from, whether this run continues the one in output_dir).

    ckpt_path=<file> resumes from that file (into this run's folder); resume=true continues
    output_dir/checkpoints/last.ckpt in place, or starts fresh when no checkpoint is there yet
    (so a preempted SLURM job can be requeued with the same command).
    """
    if check_folder:
        refuse_taken_folder(cfg, output_dir)
        if continues_in_place(cfg, output_dir):
            clear_killed_writes(output_dir)
    ckpt_path = cfg.get("ckpt_path")
    if cfg.get("resume") and ckpt_path is None:
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            ckpt_path = str(last)
        else:
            log.warning("resume=true but %s does not exist: starting from scratch", last)
    return ckpt_path, continues_in_place(cfg, output_dir)


def clear_killed_writes(output_dir: Path) -> None:
    """A run killed mid-save leaves `.<name>.<pid>.tmp` files; the next start in its folder removes them."""
    removed = remove_stale_temp_files(output_dir)
    if removed:
        places = sorted({f"{p.parent.relative_to(output_dir)}/" for p in removed})
        log.info("removed %d temp file(s) left by killed saves in %s (%s)", len(removed), output_dir, ", ".join(places))


def keep_metrics_on_resume(csv_logger, checkpoint: dict) -> None:
    """CSVLogger empties metrics.csv when its folder is not empty; keep the rows up to the checkpoint.

    Rows logged after the checkpoint (before the kill) are dropped: the resumed run logs those steps again.
    """
    path = Path(csv_logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return
    text = path.read_text()
    resumed_at = checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"].get("_batches_that_stepped", 0)
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    rows = [row for row in reader if row.get("step", "") == "" or int(float(row["step"])) < resumed_at]
    experiment = csv_logger.experiment  # creating the writer deletes the old file
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue())
    experiment.metrics_keys = list(header)  # later rows append under the same header
