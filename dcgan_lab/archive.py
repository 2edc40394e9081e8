"""A sweep without its checkpoints: what the report reads from each job, copied into a new folder to commit or share.

    python -m dcgan_lab.archive multirun/<date>/<time> results/<name> [--all-grids]

A 20-epoch job on mnist_mini leaves about 120 MB, nearly all of it checkpoints and the evaluations' figures. What
`python -m dcgan_lab.report` reads from it (Hydra's record, metrics.csv, status.json, evaluate.py's metrics.json, the
last sample grid), with the job's log, is about 60 KB. So the archive's report is the sweep's report: the same
tables, tests, curves, effects and samples. Seeds run later into it (`hydra.sweep.dir=<archive>/more_seeds`) join
its rows. The archive is written whole or not at all: into a hidden folder beside it, renamed when complete.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from dcgan_lab.errors import DataError, LabError
from dcgan_lab.run_folder import read_status
from dcgan_lab.runs import job_dirs

# Each job's files that the report reads (dcgan_lab/report.py), and its console log.
JOB_FILES = (".hydra/overrides.yaml", ".hydra/hydra.yaml", ".hydra/config.yaml", "config.yaml", "metrics.csv",
             "status.json", "train.log", "checkpoints/metrics.json", "samples/last.png")
# The grid of every epoch: what `report --epochs N` puts in its samples.png (about 100 KB each at 32x32).
EPOCH_GRIDS = "samples/epoch_*.png"
SWEEP_RECORD = "multirun.yaml"  # Hydra's record of each sweep command (the named sweep, its launcher)


@dataclass
class Archived:
    folder: Path
    jobs: int
    unfinished: int  # jobs with no status.json: killed, or still running
    bytes_kept: int
    bytes_in_sweep: int


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def files_to_keep(sweep_dir: Path, jobs: list[Path], all_grids: bool) -> list[Path]:
    """The sweep's files that the archive holds, as paths inside the sweep folder."""
    kept = sorted(sweep_dir.rglob(SWEEP_RECORD))
    for job in jobs:
        kept += [job / name for name in JOB_FILES if (job / name).is_file()]
        if all_grids:
            kept += sorted(job.glob(EPOCH_GRIDS))
    return kept


def archive_sweep(sweep_dir: str | Path, destination: str | Path, all_grids: bool = False) -> Archived:
    """Copies `files_to_keep` into `destination` (new, or an empty folder), whole or not at all."""
    sweep_dir, destination = Path(sweep_dir), Path(destination)
    if not sweep_dir.is_dir():
        raise DataError(f"{sweep_dir} is not a folder: pass a sweep folder such as multirun/<date>/<time>.")
    jobs = job_dirs(sweep_dir)
    if destination.resolve().is_relative_to(sweep_dir.resolve()):
        raise DataError(f"{destination} is inside the sweep {sweep_dir}: its copies would be read as more jobs of the "
                        "sweep; name a folder outside it.")
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise DataError(f"{destination} already exists and is not empty: name a new folder (an archive is written "
                        "whole, never into another).")
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        for source in files_to_keep(sweep_dir, jobs, all_grids):
            copy = partial / source.relative_to(sweep_dir)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)
        if destination.exists():
            destination.rmdir()  # the empty folder it may be (checked above)
        os.replace(partial, destination)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    unfinished = sum(read_status(job) is None for job in jobs)
    return Archived(destination, len(jobs), unfinished, folder_bytes(destination), folder_bytes(sweep_dir))


def megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.2f} MB" if n_bytes < 1e7 else f"{n_bytes / 1e6:.0f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcgan_lab.archive", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun folder, e.g. multirun/2026-01-31/12-00-00, or any folder of "
                                          "run folders that the report reads")
    parser.add_argument("destination", help="a new folder (or an empty one) outside the sweep")
    parser.add_argument("--all-grids", action="store_true",
                        help="also every epoch's sample grid, which `report --epochs N` shows (default: the last only)")
    args = parser.parse_args(argv)
    try:
        archived = archive_sweep(args.sweep_dir, args.destination, args.all_grids)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    left_out = "checkpoints, metric figures, W&B and TensorBoard files, reports" + ("" if args.all_grids else ", epoch grids")
    print(f"archived {archived.jobs} jobs of {args.sweep_dir} into {archived.folder}: {megabytes(archived.bytes_kept)} "
          f"of the sweep's {megabytes(archived.bytes_in_sweep)} (left out: {left_out})")
    if archived.unfinished:
        print(f"{archived.unfinished} of them have no status.json (killed, or still running): archived as they stand; "
              "the report lists them as unfinished")
    print(f"`python -m dcgan_lab.report {archived.folder}` writes the sweep's report from it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
