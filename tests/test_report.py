"""The sweep report on hand-written job folders: aggregation, best marks, failures, missing metrics, figures."""
import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dcgan_lab.report import build_report, main
from dcgan_lab.runs import best_values, direction, last_values, read_metrics

# Lightning's CSVLogger writes sparse rows: each log call fills only its own columns.
HEADER = ["D(G(z))", "D(x)", "classifier/fid", "cluster/balance", "epoch", "g_step", "loss/d", "loss/g", "step"]


def write_job(sweep: Path, name: str, num: int, overrides: list[str], rows: list[dict] | None, status: dict | None):
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}, "runtime": {"choices": {}}}}))
    if rows is not None:
        with open(job / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=HEADER)
            writer.writeheader()
            writer.writerows(rows)
    if status is not None:
        (job / "status.json").write_text(json.dumps(status))
    (job / "samples").mkdir()
    Image.fromarray(np.full((18, 18), 30 * num, dtype=np.uint8)).save(job / "samples" / "last.png")
    return job


def rows_for(fids: list[float], loss_d: float) -> list[dict]:
    rows = []
    for i, fid in enumerate(fids):
        step = 10 * (i + 1)
        rows.append({"g_step": step, "step": 2 * step, "loss/d": loss_d + i, "loss/g": 1.0, "epoch": i})
        rows.append({"g_step": step, "step": 2 * step, "classifier/fid": fid, "cluster/balance": 0.9, "epoch": i})
    return rows


@pytest.fixture
def sweep(tmp_path):
    """baseline x 3 seeds (final FIDs 10, 12, 17), hinge x 2 seeds (final 8, 9; one without FID logged at all
    is a third seed), a failed job, and a job with no status (killed)."""
    root = tmp_path / "multirun" / "2026-01-01" / "00-00-00"
    ok = lambda t: {"status": "ok", "train_time_s": t}  # noqa: E731
    common = ["+sweep=mnist_ablation", "model.ngf=8"]
    write_job(root, "ablation=baseline,seed=0", 0, ["ablation=baseline", "seed=0", *common], rows_for([30, 10], 0.5), ok(100))
    write_job(root, "ablation=baseline,seed=1", 1, ["ablation=baseline", "seed=1", *common], rows_for([25, 12], 0.7), ok(110))
    write_job(root, "ablation=baseline,seed=2", 2, ["ablation=baseline", "seed=2", *common], rows_for([5, 17], 0.9), ok(120))
    write_job(root, "ablation=hinge,seed=0", 3, ["ablation=hinge", "seed=0", *common], rows_for([20, 8], 1.5), ok(50))
    write_job(root, "ablation=hinge,seed=1", 4, ["ablation=hinge", "seed=1", *common], rows_for([21, 9], 1.1), ok(70))
    no_fid = [r for r in rows_for([1, 1], 1.3) if "classifier/fid" not in r]
    write_job(root, "ablation=hinge,seed=2", 5, ["ablation=hinge", "seed=2", *common], no_fid, ok(60))
    write_job(root, "ablation=lr_1e-4,seed=0", 6, ["ablation=lr_1e-4", "seed=0", *common], None,
              {"status": "failed", "error": "RuntimeError: CUDA out of memory", "traceback": "..."})
    write_job(root, "ablation=lr_1e-4,seed=1", 7, ["ablation=lr_1e-4", "seed=1", *common], rows_for([40], 0.1), None)
    return root


def read_report_csv(path: Path) -> dict[str, dict]:
    with open(path) as handle:
        return {row["variant"]: row for row in csv.DictReader(handle)}


def test_seeds_aggregate_as_mean_and_sample_std(sweep):
    build_report(sweep)
    table = read_report_csv(sweep / "report.csv")
    assert list(table) == ["ablation=baseline", "ablation=hinge", "ablation=lr_1e-4"]
    base, hinge, failed = table.values()
    assert float(base["classifier/fid_mean"]) == pytest.approx(13.0)  # (10 + 12 + 17) / 3
    assert float(base["classifier/fid_std"]) == pytest.approx(statistics.stdev([10, 12, 17]))  # 3.6056
    assert float(base["classifier/fid_std"]) == pytest.approx(3.605551275)
    assert base["classifier/fid_n"] == "3"
    # hinge: the seed that never logged FID counts for the loss but not for FID.
    assert float(hinge["classifier/fid_mean"]) == pytest.approx(8.5)
    assert float(hinge["classifier/fid_std"]) == pytest.approx(0.7071067812)
    assert hinge["classifier/fid_n"] == "2"
    assert float(hinge["loss/d_mean"]) == pytest.approx((2.5 + 2.1 + 2.3) / 3)
    assert float(base["train_time_s_mean"]) == pytest.approx(110.0)
    assert float(base["train_time_s_std"]) == pytest.approx(10.0)
    # Lower FID and lower train time win; losses have no best.
    assert hinge["best_in"] == "classifier/fid train_time_s"
    assert base["best_in"] == ""  # cluster/balance is 0.9 everywhere: a tie marks no one
    assert (failed["ok"], failed["failed"], failed["classifier/fid_n"]) == ("0", "2", "0")


def test_markdown_marks_best_failed_jobs_and_shared_overrides(sweep):
    build_report(sweep)
    md = (sweep / "report.md").read_text()
    assert "Named sweep: mnist_ablation (conf/sweep/)." in md
    assert "Shared by every job: `model.ngf=8`" in md
    assert "| `ablation=baseline` | — | 3/3 | 13 ± 3.606 (3) |" in md
    assert "| 8.5 ± 0.7071 (2) · n.s. (p=0.16) |" in md  # best mean, not significant vs baseline: no bold
    assert "| `ablation=lr_1e-4` | — | 0/2 | failed |" in md
    assert "| `ablation=lr_1e-4,seed=0` | failed: RuntimeError: CUDA out of memory |" in md
    assert "| `ablation=lr_1e-4,seed=1` | failed: no status.json: the job was killed or is still running |" in md
    assert "loss/d" in md.splitlines()[6] and "cluster/silhouette" not in md  # only metrics that exist
    assert "cluster/balance" not in md  # secondary metrics: in report.csv only
    assert float(read_report_csv(sweep / "report.csv")["ablation=baseline"]["cluster/balance_mean"]) == pytest.approx(0.9)


def test_figures_are_written(sweep):
    out = build_report(sweep)
    samples = Image.open(out["samples.png"])
    curves = Image.open(out["curves.png"])
    assert samples.width > 2.5 * samples.height  # three panels side by side
    assert curves.width > 300 and curves.height > 200


def test_report_cli_on_a_folder_without_jobs(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no Hydra jobs under") and "\n" not in err
    assert main([str(tmp_path / "missing")]) == 2


def test_metrics_csv_reading_last_and_best(tmp_path):
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows_for([30, 10, 14], 0.5))
    series = read_metrics(path)
    assert series["classifier/fid"] == [(10.0, 30.0), (20.0, 10.0), (30.0, 14.0)]  # steps are G steps
    assert last_values(series) == {"classifier/fid": 14.0, "cluster/balance": 0.9, "loss/d": 2.5, "loss/g": 1.0}
    assert best_values(series) == {"classifier/fid": 10.0, "cluster/balance": 0.9}
    assert (direction("fid/10k"), direction("classifier/classes_covered"), direction("loss/g")) == (-1, 1, 0)


def test_tied_best_variants_are_all_marked():
    from dcgan_lab.report import Job, Variant, best_variants

    def variant(label, fid):
        return Variant(label, [Job(Path(label), 0, [], {"status": "ok"}, {"classifier/fid": fid, "loss/d": fid})])

    variants = [variant("a", 5.0), variant("b", 5.0), variant("c", 7.0)]
    assert best_variants(variants, "classifier/fid") == {"a", "b"}
    assert best_variants(variants, "loss/d") == set()  # a lower loss is not a better GAN


def test_evaluations_logged_without_g_step_sit_at_the_end_of_their_epoch(tmp_path):
    # As Lightning writes them: training rows carry g_step (and a batch-count step), an epoch-end evaluation
    # logged at trainer.global_step (2 optimizer steps per G step) carries neither g_step nor the same step.
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows([
            {"g_step": 5, "step": 4, "loss/d": 1.0, "epoch": 0},
            {"g_step": 10, "step": 9, "loss/d": 0.9, "epoch": 0},
            {"classifier/fid": 300.0, "epoch": 0, "step": 20},
            {"g_step": 15, "step": 14, "loss/d": 0.8, "epoch": 1},
            {"g_step": 20, "step": 19, "loss/d": 0.7, "epoch": 1},
            {"classifier/fid": 200.0, "epoch": 1, "step": 40},
        ])
    series = read_metrics(path)
    assert series["classifier/fid"] == [(10.0, 300.0), (20.0, 200.0)]
    assert series["loss/d"] == [(5.0, 1.0), (10.0, 0.9), (15.0, 0.8), (20.0, 0.7)]
