"""A sweep's archive: what the report reads from every job, without checkpoints, and the same report from it."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dcgan_lab import archive
from dcgan_lab.archive import archive_sweep, main
from dcgan_lab.report import build_report
from dcgan_lab.runs import epoch_end_values, read_rows
from tests.conftest import FAST, ROOT, run_cli
from tests.test_report import composed, read_report_csv, rows_for, sweep, write_job  # noqa: F401 (fixtures)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def same_report(sweep_dir: Path, archived: Path, epochs: int | None = None) -> None:
    """Both folders' reports hold the same tables, tests and figures (report.md names its folder, e.g. in its title)."""
    ours, theirs = build_report(sweep_dir, epochs), build_report(archived, epochs)
    md = ours["report.md"].read_text()
    assert md.startswith(f"# Sweep report: {sweep_dir}\n")
    assert md.replace(str(sweep_dir), "<folder>") == theirs["report.md"].read_text().replace(str(archived), "<folder>")
    assert ours["report.csv"].read_text() == theirs["report.csv"].read_text()
    for figure in ("curves.png", "effects.png", "samples.png"):
        assert np.array_equal(pixels(ours[figure]), pixels(theirs[figure])), figure


def add_what_a_real_job_also_leaves(job: Path, g_steps: int) -> None:
    """Checkpoints (with evaluate.py's measurements of last.ckpt beside them), metric figures, epoch grids, a W&B run."""
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.ckpt").write_bytes(b"\0" * 100_000)
    (job / "checkpoints" / "metrics.json").write_text(json.dumps(
        {"last.ckpt": {"g_step": g_steps, "classifier/fid": 3.0 + g_steps / 100, "metrics/n_samples": 10000.0}}))
    (job / "metrics").mkdir()
    (job / "metrics" / "epoch0000_features_pca.png").write_bytes(b"\0" * 50_000)
    (job / "wandb" / "offline-run-1").mkdir(parents=True)
    (job / "wandb" / "offline-run-1" / "run-1.wandb").write_bytes(b"\0" * 50_000)
    for epoch, value in ((0, 255), (1, 128)):
        Image.fromarray(np.full((18, 18, 3), value, np.uint8)).save(job / "samples" / f"epoch_{epoch:04d}.png")


@pytest.fixture
def full_sweep(sweep):
    """test_report's sweep (three variants, a failed job, a killed one), each finished job with what a real job leaves
    beside the report's inputs, evaluate.py's numbers for every finished job, an older report, and Hydra's record."""
    for job in sweep.iterdir():
        status = json.loads((job / "status.json").read_text()) if (job / "status.json").exists() else None
        if status and status["status"] == "ok":
            status["g_steps"] = 20
            (job / "status.json").write_text(json.dumps(status))
            add_what_a_real_job_also_leaves(job, 20)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"mode": "MULTIRUN"}}))
    build_report(sweep)  # a report already in the sweep: the archive leaves it out, its own report is rewritten
    return sweep


def test_the_archive_gives_the_sweeps_report_without_checkpoints_or_figures(full_sweep, tmp_path):
    archived = archive_sweep(full_sweep, tmp_path / "archive")
    assert (archived.jobs, archived.unfinished) == (8, 1)  # ablation=lr_1e-4,seed=1 never wrote status.json
    kept = sorted(str(p.relative_to(archived.folder)) for p in archived.folder.rglob("*") if p.is_file())
    job = "ablation=baseline,seed=0"
    assert [name.removeprefix(job + "/") for name in kept if name.startswith(job)] == [
        ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "checkpoints/metrics.json", "metrics.csv",
        "samples/last.png", "status.json"]
    assert "multirun.yaml" in kept and not any(name.endswith((".ckpt", ".wandb", "report.md")) for name in kept)
    assert archived.bytes_kept < archived.bytes_in_sweep / 20
    same_report(full_sweep, archived.folder)
    md = (archived.folder / "report.md").read_text()
    assert "Measured after training by evaluate.py (10000 samples per job" in md  # metrics.json came along
    assert "3.2 ± 0 (3)" in md  # each baseline seed's FID from evaluate.py, not the logged 10, 12, 17


def test_all_grids_keep_what_the_report_after_n_epochs_shows(full_sweep, tmp_path):
    archived = archive_sweep(full_sweep, tmp_path / "archive", all_grids=True)
    assert (archived.folder / "ablation=hinge,seed=0" / "samples" / "epoch_0001.png").is_file()
    same_report(full_sweep, archived.folder, epochs=1)
    # Without them the report after 1 epoch has no grid to show, and its samples.png says so.
    lean = archive_sweep(full_sweep, tmp_path / "lean")
    assert not list(lean.folder.rglob("epoch_*.png"))
    samples = pixels(build_report(lean.folder, epochs=1)["samples.png"])
    assert not np.array_equal(samples, pixels(build_report(archived.folder, epochs=1)["samples.png"]))


def test_seeds_run_later_into_the_archive_join_its_rows(full_sweep, tmp_path, composed):  # noqa: F811
    archived = archive_sweep(full_sweep, tmp_path / "archive").folder
    more = archived / "more_seeds"
    write_job(more, "ablation=hinge,seed=3", 0, ["ablation=hinge", "seed=3", "+sweep=mnist_ablation", "model.ngf=8"],
              rows_for([22, 10], 1.0), {"status": "ok", "train_time_s": 40}, "top", composed["hinge"])
    md = build_report(archived)["report.md"].read_text()
    hinge = next(line for line in md.splitlines() if line.startswith("| `ablation=hinge`"))
    assert "| 4/4 |" in hinge


def refused(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1
    return err


def test_bad_folders_get_one_line_and_nothing_is_written(full_sweep, tmp_path, capsys):
    taken = tmp_path / "taken"
    (taken / "notes").mkdir(parents=True)
    assert "already exists and is not empty: name a new folder" in refused(capsys, str(full_sweep), str(taken))
    assert [p.name for p in taken.iterdir()] == ["notes"]
    assert "is inside the sweep" in refused(capsys, str(full_sweep), str(full_sweep / "archive"))
    assert not (full_sweep / "archive").exists()
    assert "no Hydra jobs under" in refused(capsys, str(tmp_path / "taken"), str(tmp_path / "a"))
    assert "is not a folder" in refused(capsys, str(tmp_path / "nowhere"), str(tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(full_sweep), str(empty)]) == 0  # an empty folder is as good as a new one
    assert (empty / "multirun.yaml").is_file()


def test_an_archive_that_fails_midway_leaves_nothing_behind(full_sweep, tmp_path, monkeypatch):
    copied = []

    def copy_until_the_disk_is_full(source, target):
        if len(copied) == 10:
            raise OSError(28, "No space left on device")
        copied.append(target)
        Path(target).write_bytes(Path(source).read_bytes())

    monkeypatch.setattr(archive.shutil, "copy2", copy_until_the_disk_is_full)
    with pytest.raises(OSError, match="No space left"):
        archive_sweep(full_sweep, tmp_path / "archive")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["multirun"]  # no archive, no hidden partial one


@pytest.mark.slow  # a real 2-job sweep: ~15 s
def test_a_real_sweeps_archive_from_the_command_line(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(["-m", "loss=bce,hinge", *FAST, f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    command = [sys.executable, "-m", "dcgan_lab.archive", str(sweep_dir), str(tmp_path / "archive")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"archived 2 jobs of {sweep_dir} into {tmp_path / 'archive'}: ")
    assert f"`python -m dcgan_lab.report {tmp_path / 'archive'}` writes the sweep's report from it" in done.stdout
    assert list(sweep_dir.rglob("*.ckpt")) and not list((tmp_path / "archive").rglob("*.ckpt"))
    same_report(sweep_dir, tmp_path / "archive")
    # Each real job logged its seconds of training at its epoch's end (what --seconds reads), and the archive keeps
    # them: a cut report shows the time at the epoch it reads, below each job's total.
    archived = sorted((tmp_path / "archive").rglob("metrics.csv"))
    ends = [epoch_end_values(read_rows(csv), "train_time_s") for csv in archived]
    totals = [json.loads((csv.parent / "status.json").read_text())["train_time_s"] for csv in archived]
    assert len(ends) == 2 and all(list(end) == [0.0] and 0 < end[0] < total for end, total in zip(ends, totals))
    table = read_report_csv(build_report(tmp_path / "archive", epochs=1)["report.csv"])
    assert sorted(float(row["train_time_s_mean"]) for row in table.values()) == sorted(end[0] for end in ends)


def archived_studies() -> list[Path]:
    """The folders of benchmarks/results/ that hold their sweep's archive beside its report."""
    results = ROOT / "benchmarks" / "results"
    return sorted({path.parent for path in results.rglob("report.md")
                   if any(path.parent.rglob(".hydra/overrides.yaml")) and not path.parent.name.startswith(("after_", "at_", "within_"))})


@pytest.mark.parametrize("study", archived_studies(), ids=lambda path: path.name)
def test_a_committed_studys_report_is_what_its_archive_gives(study, tmp_path):
    """A results folder that keeps its jobs is reproducible: the report written from them now is the one committed.
    A change to what the report writes fails here until the committed reports are rewritten with it. A report that
    took jobs from further folders names them in its title (written from the repository's root); they are copied too,
    to the same places, so that every path the report writes is the committed one."""
    committed = (study / "report.md").read_text()
    folders = committed.splitlines()[0].removeprefix("# Sweep report: ").split(" + ")
    assert folders[0] == str(study.relative_to(ROOT)), "write the report from the repository's root"
    for folder in folders:
        shutil.copytree(ROOT / folder, tmp_path / folder)
    copies = [tmp_path / folder for folder in folders]
    rewrite = f"the report changed: rewrite it with `python -m dcgan_lab.report {' '.join(folders)} --wandb off`"
    assert build_report(copies[0], more_sweeps=copies[1:])["report.md"].read_text().replace(
        f"{tmp_path}/", "") == committed, rewrite
    assert (copies[0] / "report.csv").read_text() == (study / "report.csv").read_text(), rewrite
