"""The sweep report on hand-written job folders: aggregation, best marks, failures, missing metrics, figures."""
import csv
import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from omegaconf import OmegaConf

from dcgan_lab.errors import DataError
from dcgan_lab.report import build_report, main
from dcgan_lab.runs import best_values, direction, last_values, read_metrics
from tests.conftest import compose_config

# Lightning's CSVLogger writes sparse rows: each log call fills only its own columns.
HEADER = ["D(G(z))", "D(x)", "classifier/fid", "cluster/balance", "epoch", "g_step", "loss/d", "loss/g", "step"]


# Each job's last sample grid (RGB, as the lab writes them): half white, half black, which half says whose it is.
PATTERNS = {"left": (slice(None), slice(None, 9)), "right": (slice(None), slice(9, None)),
            "top": (slice(None, 9), slice(None)), "bottom": (slice(9, None), slice(None))}


def write_job(sweep: Path, name: str, num: int, overrides: list[str], rows: list[dict] | None, status: dict | None,
              pattern: str, composed=None, header: list[str] = HEADER):
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    # What Hydra writes before a job runs: the unresolved config and the group choices.
    choices = dict(composed.hydra.runtime.choices) if composed is not None else {}
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}, "runtime": {"choices": choices}}}))
    if composed is not None:
        (job / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml({k: v for k, v in composed.items() if k != "hydra"}))
    if rows is not None:
        with open(job / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
    if status is not None:
        (job / "status.json").write_text(json.dumps(status))
    (job / "samples").mkdir()
    grid = np.zeros((18, 18, 3), dtype=np.uint8)
    grid[PATTERNS[pattern]] = 255
    Image.fromarray(grid).save(job / "samples" / "last.png")
    return job


def rows_for(fids: list[float], loss_d: float) -> list[dict]:
    rows = []
    for i, fid in enumerate(fids):
        step = 10 * (i + 1)
        rows.append({"g_step": step, "step": 2 * step, "loss/d": loss_d + i, "loss/g": 1.0, "epoch": i})
        rows.append({"g_step": step, "step": 2 * step, "classifier/fid": fid, "cluster/balance": 0.9, "epoch": i})
    return rows


@pytest.fixture(scope="module")
def composed(tmp_path_factory) -> dict:
    """The real composed config of each variant (what Hydra saves in each job's .hydra/)."""
    folder = tmp_path_factory.mktemp("compose")
    return {variant: compose_config(folder, ["+sweep=mnist_ablation", f"ablation={variant}", "model.ngf=8"])
            for variant in ("baseline", "hinge", "lr_1e-4")}


@pytest.fixture
def sweep(tmp_path, composed):
    """baseline x 3 seeds (final FIDs 10, 12, 17), hinge x 2 seeds (final 8, 9; one without FID logged at all
    is a third seed), a failed job, and a job with no status (killed). Sample grids: the first finished seed of
    baseline is white on the left, of hinge on top; the other seeds the opposite."""
    root = tmp_path / "multirun" / "2026-01-01" / "00-00-00"
    ok = lambda t: {"status": "ok", "train_time_s": t}  # noqa: E731
    common = ["+sweep=mnist_ablation", "model.ngf=8"]
    base, hinge, lr = composed["baseline"], composed["hinge"], composed["lr_1e-4"]
    write_job(root, "ablation=baseline,seed=0", 0, ["ablation=baseline", "seed=0", *common], rows_for([30, 10], 0.5), ok(100), "left", base)
    write_job(root, "ablation=baseline,seed=1", 1, ["ablation=baseline", "seed=1", *common], rows_for([25, 12], 0.7), ok(110), "right", base)
    write_job(root, "ablation=baseline,seed=2", 2, ["ablation=baseline", "seed=2", *common], rows_for([5, 17], 0.9), ok(120), "right", base)
    write_job(root, "ablation=hinge,seed=0", 3, ["ablation=hinge", "seed=0", *common], rows_for([20, 8], 1.5), ok(50), "top", hinge)
    write_job(root, "ablation=hinge,seed=1", 4, ["ablation=hinge", "seed=1", *common], rows_for([21, 9], 1.1), ok(70), "bottom", hinge)
    no_fid = [r for r in rows_for([1, 1], 1.3) if "classifier/fid" not in r]
    write_job(root, "ablation=hinge,seed=2", 5, ["ablation=hinge", "seed=2", *common], no_fid, ok(60), "bottom", hinge)
    write_job(root, "ablation=lr_1e-4,seed=0", 6, ["ablation=lr_1e-4", "seed=0", *common], None,
              {"status": "failed", "error": "RuntimeError: CUDA out of memory", "traceback": "..."}, "left", lr)
    write_job(root, "ablation=lr_1e-4,seed=1", 7, ["ablation=lr_1e-4", "seed=1", *common], rows_for([40], 0.1), None, "left", lr)
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
    # lr_1e-4: one job failed, the other is still running (no status.json): report.md's words, counted.
    assert (failed["jobs"], failed["ok"], failed["failed"], failed["unfinished"], failed["classifier/fid_n"]) == (
        "2", "0", "1", "1", "0")


def test_a_report_made_mid_sweep_calls_running_jobs_unfinished_not_failed(sweep):
    (sweep / "ablation=lr_1e-4,seed=0" / "status.json").unlink()  # both lr_1e-4 jobs now still running
    build_report(sweep)
    md = (sweep / "report.md").read_text()
    assert "| `ablation=lr_1e-4` | optimizer.lr_d=0.0001; optimizer.lr_g=0.0001 | 0/2 | unfinished |" in md
    assert "| `ablation=lr_1e-4,seed=0` | unfinished: no status.json: the job was killed or is still running |" in md
    assert "failed" not in md.split("## Failed or unfinished jobs")[0]


def test_a_job_stopped_by_a_signal_is_unfinished_with_how_to_continue(sweep):
    """Ctrl-C or SIGTERM (a preempted SLURM job): status.json says `interrupted`, its checkpoint continues it."""
    said = "interrupted by SIGTERM after G step 10; continue from last.ckpt with the sweep's command plus resume=true"
    (sweep / "ablation=lr_1e-4,seed=0" / "status.json").write_text(json.dumps(
        {"status": "interrupted", "signal": "SIGTERM", "error": said, "g_steps": 10}))
    build_report(sweep)
    md = (sweep / "report.md").read_text()
    assert "| `ablation=lr_1e-4` | optimizer.lr_d=0.0001; optimizer.lr_g=0.0001 | 0/2 | unfinished |" in md
    assert f"| `ablation=lr_1e-4,seed=0` | unfinished: {said} |" in md
    assert read_report_csv(sweep / "report.csv")["ablation=lr_1e-4"]["unfinished"] == "2"


def test_markdown_marks_best_failed_jobs_and_shared_overrides(sweep):
    build_report(sweep)
    md = (sweep / "report.md").read_text()
    assert "Named sweep: mnist_ablation (conf/sweep/)." in md
    assert "Shared by every job: `model.ngf=8`" in md
    assert "| `ablation=baseline` | the baseline | 3/3 | 13 ± 3.606 (3) |" in md
    assert "| 8.5 ± 0.7071 (2) · n.s. (p=0.16) |" in md  # best mean, not significant vs baseline: no bold
    assert "| `ablation=lr_1e-4` | optimizer.lr_d=0.0001; optimizer.lr_g=0.0001 | 0/2 | failed |" in md
    assert "| `ablation=lr_1e-4,seed=0` | failed: RuntimeError: CUDA out of memory |" in md
    assert "| `ablation=lr_1e-4,seed=1` | unfinished: no status.json: the job was killed or is still running |" in md
    header = next(line for line in md.splitlines() if line.startswith("| variant") or line.startswith("| job"))
    assert "loss/d" in header and "cluster/silhouette" not in md  # only metrics that exist
    assert "cluster/balance" not in md  # secondary metrics: in report.csv only
    assert float(read_report_csv(sweep / "report.csv")["ablation=baseline"]["cluster/balance_mean"]) == pytest.approx(0.9)



def test_a_job_that_rolled_back_counts_as_finished_and_the_report_says_where_it_diverged(sweep):
    """A guarded run that diverged and went back to a checkpoint (action=rollback) ends ok: its numbers count,
    and the table and a section of its own say the variant was unstable (status.json's `rollbacks`, as the
    pipeline writes them: tests/test_reliability.py)."""
    job = sweep / "ablation=hinge,seed=1"
    status = json.loads((job / "status.json").read_text())
    status["rollbacks"] = [{"diverged_at_g_step": 13, "at_g_step": 15, "to": str(job / "checkpoints/last.ckpt"), "to_g_step": 10},
                           {"diverged_at_g_step": 18, "at_g_step": 20, "to": str(job / "checkpoints/last.ckpt"), "to_g_step": 10}]
    (job / "status.json").write_text(json.dumps(status))
    build_report(sweep)
    md = (sweep / "report.md").read_text()
    assert "| `ablation=hinge` | loss=hinge | 3/3, 1 rolled back | 8.5 ± 0.7071 (2) · n.s. (p=0.16) |" in md, md
    assert "| `ablation=baseline` | the baseline | 3/3 | 13 ± 3.606 (3) |" in md
    section = md.split("## Jobs that diverged and were rolled back")[1]
    assert "| `ablation=hinge,seed=1` | `ablation=hinge` | 1 | 13 → 10, 18 → 10 |" in section
    assert "ablation=hinge,seed=0" not in section and "ablation=baseline" not in section
    table = read_report_csv(sweep / "report.csv")
    assert (table["ablation=hinge"]["ok"], table["ablation=hinge"]["rolled_back"]) == ("3", "1")
    assert table["ablation=baseline"]["rolled_back"] == "0"
    assert float(table["ablation=hinge"]["classifier/fid_mean"]) == pytest.approx(8.5)  # its numbers still count


def report_with_an_r1_variant(tmp_path, composed) -> None:
    """The baseline and `loss.r1_weight=5` (which alone logs penalty/r1: seed s logs 0.1 (s + 1) x its G step),
    2 seeds each, reported."""
    root = tmp_path / "multirun"
    ok = {"status": "ok", "train_time_s": 1}
    for seed in (0, 1):
        write_job(root, f"ablation=baseline,seed={seed}", seed, ["ablation=baseline", f"seed={seed}"],
                  rows_for([30, 20], 0.5), ok, "left", composed["baseline"])
        rows = [{**row, "penalty/r1": 0.1 * (seed + 1) * row["g_step"]} if "loss/d" in row else row
                for row in rows_for([25, 15], 0.6)]
        write_job(root, f"loss.r1_weight=5,seed={seed}", 2 + seed, ["loss.r1_weight=5", f"seed={seed}"], rows, ok,
                  "left", composed["baseline"], header=HEADER + ["penalty/r1"])
    build_report(root)


def test_each_penalty_gets_a_curve_for_the_variants_that_have_it_on(tmp_path, composed, drawn):
    """A variant with R1 on logs penalty/r1: curves.png gets its panel, after the losses, with that variant's mean
    over seeds and no line for the baseline, which never logged it."""
    report_with_an_r1_variant(tmp_path, composed)
    fig, _ = drawn["curves.png"]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:3] == ["loss/d", "loss/g", "penalty/r1"]  # (these rows have no D(x) or D(G(z)))
    panel = next(ax for ax in fig.axes if ax.get_title() == "penalty/r1")
    assert [line.get_label() for line in panel.lines] == ["loss.r1_weight=5"]
    assert list(panel.lines[0].get_ydata()) == pytest.approx([1.5, 3.0])  # mean of 1 and 2, of 2 and 4


def test_a_variant_keeps_its_legend_colour_in_a_panel_only_it_logs(tmp_path, composed, drawn):
    """The penalty/r1 panel has the R1 variant alone: its line and band are drawn in the colour the legend and the
    loss panels give that variant, not in the first colour of the cycle, which the legend gives the baseline."""
    from matplotlib.colors import to_rgb

    report_with_an_r1_variant(tmp_path, composed)
    fig, _ = drawn["curves.png"]
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    legend = {text.get_text(): to_rgb(handle.get_color())
              for text, handle in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    assert list(legend) == ["ablation=baseline", "loss.r1_weight=5"] and len(set(legend.values())) == 2
    for title in ("loss/d", "loss/g", "penalty/r1"):
        for line, band in zip(panels[title].lines, panels[title].collections):
            assert to_rgb(line.get_color()) == legend[line.get_label()]
            assert to_rgb(band.get_facecolor()[0]) == legend[line.get_label()]
    assert to_rgb(panels["penalty/r1"].lines[0].get_color()) != legend["ablation=baseline"]


def test_curves_are_the_mean_and_std_over_seeds(sweep, drawn):
    build_report(sweep)
    fig, _ = drawn["curves.png"]
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    expected = {  # (steps, mean, sample std) by variant; lr_1e-4 has no finished job, so no line
        "classifier/fid": {"ablation=baseline": ([10, 20], [20, 13], [statistics.stdev([30, 25, 5]), statistics.stdev([10, 12, 17])]),
                           "ablation=hinge": ([10, 20], [20.5, 8.5], [0.7071067812, 0.7071067812])},
        "loss/d": {"ablation=baseline": ([10, 20], [0.7, 1.7], [0.2, 0.2]),
                   "ablation=hinge": ([10, 20], [1.3, 2.3], [0.2, 0.2])},  # all 3 hinge seeds logged losses
    }
    for metric, variants in expected.items():
        ax = axes[metric]
        assert ax.get_xlabel() == "G step"
        assert sorted(line.get_label() for line in ax.lines) == sorted(variants)
        for line, band in zip(ax.lines, ax.collections):
            steps, mean, std = variants[line.get_label()]
            assert list(line.get_xdata()) == steps
            assert list(line.get_ydata()) == pytest.approx(mean)
            band_y = band.get_paths()[0].vertices[:, 1]
            assert (band_y.min(), band_y.max()) == pytest.approx(
                (min(m - s for m, s in zip(mean, std)), max(m + s for m, s in zip(mean, std))))


def effect_rows(ax) -> dict[int, dict]:
    """What an effects.png panel draws in each variant's row (y): the seeds' dots, the mean's diamond, the interval."""
    rows: dict[int, dict] = {}
    for collection in ax.collections:
        points = collection.get_offsets()
        y = int(points[0][1])
        kind = "mean" if len(points) == 1 and collection.get_sizes()[0] > 20 else "seeds"
        rows.setdefault(y, {})[kind] = sorted(float(x) for x, _ in points)
        rows[y][f"{kind}_colour"] = tuple(collection.get_facecolor()[0][:3])
    for line in ax.lines:
        if line.get_linestyle() == "--":
            rows.setdefault("baseline", list(line.get_xdata()))
        elif len(line.get_xdata()) == 1:  # an arrowhead: the interval runs on past the panel's edge
            rows[int(line.get_ydata()[0])].setdefault("arrows", []).append((line.get_marker(), float(line.get_xdata()[0])))
        else:
            rows[int(line.get_ydata()[0])]["interval"] = sorted(line.get_xdata())
    return rows


def drawn_bar(ax, low: float, high: float) -> dict:
    """The interval [low, high] as a panel shows it: cut at the panel's edges, with an arrowhead at each cut end."""
    left, right = map(float, ax.get_xlim())
    arrows = [("<", left)] * int(low < left) + [(">", right)] * int(high > right)
    return {"interval": pytest.approx([max(low, left), min(high, right)]), "arrows": arrows}


def test_effects_show_each_seed_the_mean_and_the_tables_interval_against_the_baseline(sweep, drawn):
    """effects.png is report.csv as a picture: per metric, each variant's seeds, mean and the interval of its
    difference from the baseline (drawn around its mean), the baseline's mean dashed; a variant with no value a dash."""
    from matplotlib.colors import to_rgb

    from dcgan_lab.report import welch_interval
    from dcgan_lab.report_figures import EFFECT_COLOURS

    out = build_report(sweep)
    table = read_report_csv(out["report.csv"])
    fig, _ = drawn["effects.png"]
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    # report.md's quality columns: no losses or train time, and not cluster/balance, a column of report.csv only.
    assert list(panels) == ["classifier/fid (lower is better)"]
    fid = panels["classifier/fid (lower is better)"]
    assert [t.get_text() for t in fid.get_yticklabels()] == ["ablation=baseline", "ablation=hinge", "ablation=lr_1e-4"]
    rows = effect_rows(fid)
    assert rows["baseline"] == pytest.approx([13.0, 13.0])
    assert rows[0]["seeds"] == [10, 12, 17] and rows[0]["mean"] == pytest.approx([13.0]) and "interval" not in rows[0]
    assert rows[1]["seeds"] == [8, 9] and rows[1]["mean"] == pytest.approx([8.5])
    # The panel spans the seeds' values (8 to 17) with 12% of that range on each side, not the intervals.
    assert fid.get_xlim() == pytest.approx((8 - 0.12 * 9, 17 + 0.12 * 9))
    low, high = welch_interval([8, 9], [10, 12, 17], 0.05)  # one variant tested: nothing to correct
    hinge = table["ablation=hinge"]
    assert (low, high) == pytest.approx((float(hinge["classifier/fid_diff_ci_low"]), float(hinge["classifier/fid_diff_ci_high"])))
    bar = drawn_bar(fid, 13 + low, 13 + high)
    assert bar["arrows"]  # 2 seeds against 3: an interval wider than the panel
    assert {"interval": rows[1]["interval"], "arrows": rows[1].get("arrows", [])} == bar
    assert float(hinge["classifier/fid_p"]) > 0.05 and rows[1]["mean_colour"] == to_rgb(EFFECT_COLOURS[0])  # n.s.: grey
    assert rows[0]["mean_colour"] == to_rgb("black")
    assert 2 not in rows and [t.get_text() for t in fid.texts] == ["–"]  # lr_1e-4: no finished job


def test_effects_colour_a_significant_change_by_whether_it_helps(tmp_path, composed, drawn):
    """Green where a variant is significantly better than the baseline (after Holm), red where worse, grey where
    neither, in the saved pixels; the intervals are report.md's, each at the level Holm's correction tested it:
    the two clear changes at 1 - 0.05/3 and 1 - 0.05/2 (smaller p first), beta1_0.3 at 1 - 0.05."""
    from scipy.stats import ttest_ind

    from dcgan_lab.report import welch_interval

    root = tmp_path / "multirun"
    ok = {"status": "ok", "train_time_s": 1}
    finals = {"ablation=baseline": [30, 31, 29], "ablation=hinge": [10, 11, 9], "ablation=lr_1e-4": [50, 52, 51],
              "ablation=beta1_0.3": [28, 35, 31]}
    num = 0
    for label, fids in finals.items():
        for seed, fid in enumerate(fids):
            write_job(root, f"{label},seed={seed}", num, [label, f"seed={seed}"], rows_for([40, fid], 0.5), ok,
                      "left", composed["baseline"])
            num += 1
    build_report(root)
    fig, dpi = drawn["effects.png"]
    pixels = np.asarray(Image.open(root / "effects.png").convert("RGB"), dtype=int)
    fid = next(ax for ax in fig.axes if ax.get_title().startswith("classifier/fid"))
    labels = [t.get_text() for t in fid.get_yticklabels()]
    assert labels == list(finals)
    rows = effect_rows(fid)
    expected = {"ablation=hinge": (44, 160, 44), "ablation=lr_1e-4": (214, 39, 40), "ablation=beta1_0.3": (128, 128, 128)}
    scale = dpi / fig.dpi
    p = {label: ttest_ind(finals[label], finals["ablation=baseline"], equal_var=False).pvalue for label in expected}
    clear = sorted(["ablation=hinge", "ablation=lr_1e-4"], key=p.get)
    level = {clear[0]: 0.05 / 3, clear[1]: 0.05 / 2, "ablation=beta1_0.3": 0.05}
    for label, rgb in expected.items():
        y = labels.index(label)
        low, high = welch_interval(finals[label], finals["ablation=baseline"], level[label])
        assert {"interval": rows[y]["interval"], "arrows": rows[y].get("arrows", [])} == drawn_bar(fid, 30 + low, 30 + high)
        x_px, y_px = fid.transData.transform((rows[y]["mean"][0], y)) * scale
        centre = pixels[pixels.shape[0] - int(round(y_px)), int(round(x_px))]
        assert np.abs(centre - rgb).max() <= 3, (label, centre)  # the diamond as the user sees it
    assert max(rows[1]["interval"]) < 30 < min(rows[2]["interval"])  # hinge's bar left of the dashed line, lr's right
    assert min(rows[3]["interval"]) < 30 < max(rows[3]["interval"])  # beta1_0.3's bar crosses it: n.s.
    # The key under a one-panel figure: whole, in lines of the figure's width, below the panel's tick labels.
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # the report closed the figure: a canvas to measure it on
    key = fig.texts[-1]
    box, panel = key.get_window_extent(renderer), fid.get_tightbbox(renderer)
    assert "Holm's level" in key.get_text() and key.get_text().endswith("significantly better/worse")
    assert 0 < box.x0 and box.x1 < fig.bbox.width and box.y1 < panel.y0, (box, panel, fig.bbox)
    band = pixels[pixels.shape[0] - int(box.y1 * scale):, :]  # the key's rows of the saved image
    assert band.min() < 100 and band[:, :3].min() > 200 and band[:, -3:].min() > 200  # text, none cut at an edge


def test_effects_give_each_variant_room_for_its_label_of_many_overrides(tmp_path, drawn):
    """A variant of four long overrides wraps to six lines; rows kept at one height for any label ran such labels
    into their neighbours (benchmarks/results/spectral_norm_d/effects.png before the fix)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    root, num = tmp_path / "multirun", 0
    long = ["model.spectral_norm_d=True", "norm.d._target_=dcgan_lab.nets.blocks.no_norm"]
    for changes, fids in ((["ablation=baseline", *long], [90, 95]), (["ablation=hinge", *long], [70, 80]),
                          (["ablation=hinge", *long, "optimizer.betas=[0.0,0.9]", "optimizer.lr_d=0.0004"], [40, 42]),
                          (["ablation=baseline"], [17, 18])):
        for seed, fid in enumerate(fids):
            overrides = [*changes, f"seed={seed}"]
            write_job(root, ",".join(overrides), num, overrides, rows_for([150, fid], 0.5), {"status": "ok"}, "left")
            num += 1
    assert main([str(root), "--wandb", "off", *[f"--baseline={o}" for o in ["ablation=baseline", *long]]]) == 0
    fig, _ = drawn["effects.png"]
    renderer = FigureCanvasAgg(fig).get_renderer()
    fid = next(ax for ax in fig.axes if ax.get_title().startswith("classifier/fid"))
    labels = fid.get_yticklabels()
    assert max(t.get_text().count("\n") + 1 for t in labels) >= 5
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda box: box.y0)
    assert all(lower.y1 < upper.y0 for lower, upper in zip(boxes, boxes[1:])), [(b.y0, b.y1) for b in boxes]
    assert all(0 <= box.x0 for box in boxes)  # and none is cut at the figure's left edge


def test_effects_of_a_sweep_without_a_quality_metric_say_so(tmp_path, composed, drawn):
    root = tmp_path / "multirun"
    rows = [row for row in rows_for([30, 20], 0.5) if "loss/d" in row]  # losses only: no metric to compare
    write_job(root, "ablation=baseline,seed=0", 0, ["ablation=baseline", "seed=0"], rows, {"status": "ok"}, "left",
              composed["baseline"])
    build_report(root)
    fig, _ = drawn["effects.png"]
    assert [t.get_text() for ax in fig.axes for t in ax.texts] == [
        "no finished job logged a metric with a better direction: nothing to compare"]


def test_panel_titles_break_between_overrides_and_after_their_equals_sign_never_inside_a_word():
    from dcgan_lab.report_figures import wrap_label

    assert wrap_label("model.d_conditioning=projection", 28).split("\n") == ["model.d_conditioning=", "projection"]
    assert wrap_label("loss=hinge model.attention=true optimizer.lr_g=0.0004", 28).split("\n") == [
        "loss=hinge", "model.attention=true", "optimizer.lr_g=0.0004"]
    assert wrap_label("ablation=baseline", 28) == "ablation=baseline"


def test_a_long_variant_name_keeps_every_line_of_its_samples_title(tmp_path, composed, drawn):
    # A variant of three overrides wraps to 6 title lines: centred grids left them too little room, and the
    # picture began mid-title ("ablation=bcr," cut off above the image's first row).
    root = tmp_path / "multirun"
    long_name = ["ablation=bcr", "loss.consistency_fake_weight=1", "loss.consistency_real_weight=1"]
    ok = {"status": "ok", "train_time_s": 1}
    write_job(root, "ablation=baseline,seed=1", 0, ["ablation=baseline", "seed=1"], rows_for([30, 10], 0.5), ok,
              "left", composed["baseline"])
    write_job(root, ",".join(long_name) + ",seed=1", 1, [*long_name, "seed=1"], rows_for([30, 12], 0.5), ok,
              "bottom", composed["baseline"])
    out = build_report(root)
    fig, _ = drawn["samples.png"]
    assert [ax.get_title().count("\n") + 1 for ax in fig.axes] == [2, 6]  # its label, then "(seed 1)"
    pixels = np.asarray(Image.open(out["samples.png"]).convert("L"))
    right = pixels[:, pixels.shape[1] // 2:]  # the long-named variant's panel; its grid's top half is black
    grid_top = np.flatnonzero((right < 128).mean(axis=1) > 0.5)[0]
    ink = (right[:grid_top] < 128).any(axis=1)
    starts = np.flatnonzero(ink & ~np.concatenate([[False], ink[:-1]]))  # where each band of text begins
    assert len(starts) == 6  # ablation=bcr, / loss.consistency_fake_weight= / 1, / ...real_weight= / 1 / (seed 1)
    assert not ink[:3].any()  # white above the first line: nothing cut off at the top


def test_samples_show_each_variants_own_grid_side_by_side(sweep, drawn):
    out = build_report(sweep)
    fig, dpi = drawn["samples.png"]
    pixels = np.asarray(Image.open(out["samples.png"]).convert("L"), dtype=float)
    scale = dpi / fig.dpi
    panels = sorted(fig.axes, key=lambda ax: ax.get_position().x0)
    assert [ax.get_title().split("\n")[0] for ax in panels] == ["ablation=baseline", "ablation=hinge", "ablation=lr_1e-4"]

    def halves(ax):
        """Mean brightness of the left, right, top and bottom halves of the picture inside a panel."""
        box = ax.get_window_extent()
        x0, x1 = int(box.x0 * scale) + 3, int(box.x1 * scale) - 3
        y0, y1 = pixels.shape[0] - int(box.y1 * scale) + 3, pixels.shape[0] - int(box.y0 * scale) - 3
        panel = pixels[y0:y1, x0:x1]
        h, w = panel.shape
        return {"left": panel[:, : w // 2].mean(), "right": panel[:, w // 2 :].mean(),
                "top": panel[: h // 2].mean(), "bottom": panel[h // 2 :].mean()}

    baseline, hinge, failed = panels
    assert "(seed 0)" in baseline.get_title() and "(seed 0)" in hinge.get_title()  # each variant's first finished seed
    b = halves(baseline)
    assert b["left"] > 200 and b["right"] < 50  # baseline seed 0: white on the left
    h = halves(hinge)
    assert h["top"] > 200 and h["bottom"] < 50  # hinge seed 0: white on top
    assert not failed.images and " ".join(failed.texts[0].get_text().split()) == "failed: RuntimeError: CUDA out of memory"


def test_the_report_after_n_epochs_cuts_every_job_there(sweep, drawn):
    # A published study's length inside longer runs: each job's values as they stood after its first epoch.
    grid = np.zeros((18, 18, 3), dtype=np.uint8)
    grid[PATTERNS["bottom"]] = 255
    Image.fromarray(grid).save(sweep / "ablation=baseline,seed=0" / "samples" / "epoch_0000.png")
    out = build_report(sweep, epochs=1)
    assert out["report.md"] == sweep / "after_1_epochs" / "report.md" and (sweep / "report.md").exists() is False
    table = read_report_csv(out["report.csv"])
    assert float(table["ablation=baseline"]["classifier/fid_mean"]) == pytest.approx((30 + 25 + 5) / 3)  # epoch 0's
    assert float(table["ablation=hinge"]["classifier/fid_mean"]) == pytest.approx(20.5)
    assert float(table["ablation=baseline"]["loss/d_mean"]) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert "train_time_s_mean" not in table["ablation=baseline"]  # the whole run's time cannot be cut: left out
    md = out["report.md"].read_text()
    assert "last logged value within its first 1 epochs" in md and "| `ablation=baseline` | the baseline | 3/3 | 20 ± 13.23 (3) |" in md
    effects, _ = drawn["effects.png"]
    assert out["effects.png"] == sweep / "after_1_epochs" / "effects.png"
    fid = next(ax for ax in effects.axes if ax.get_title().startswith("classifier/fid"))
    assert effect_rows(fid)[0]["seeds"] == [5, 25, 30]  # the baseline seeds' FIDs after epoch 0, not their last
    fig, _ = drawn["samples.png"]
    panels = sorted(fig.axes, key=lambda ax: ax.get_position().x0)
    assert panels[0].images and not panels[1].images  # baseline seed 0 has a grid of epoch 0; hinge has none
    assert " ".join(panels[1].texts[0].get_text().split()) == "no samples/epoch_0000.png"
    with pytest.raises(DataError, match="--epochs 0 must be an integer >= 1"):
        build_report(sweep, epochs=0)


def test_a_report_after_more_epochs_than_the_jobs_ran_is_refused(sweep, drawn):
    # Every finished job ran 2 epochs: "after 3 epochs" would be their final values under another name.
    with pytest.raises(DataError) as refused:
        build_report(sweep, epochs=3)
    assert str(refused.value) == ("--epochs 3 is past the end of 6 finished job(s) (e.g. ablation=baseline,seed=0: 2 "
                                  "epochs); the longest job ran 2: pass --epochs 2 or less")
    assert not (sweep / "after_3_epochs").exists()
    build_report(sweep, epochs=2)  # the unfinished job's 1 epoch does not count: it has no final values anyway
    assert (sweep / "after_2_epochs" / "report.md").exists()


def epoch_rows(g_steps_per_epoch: int, epochs: int, fids: dict[int, float]) -> list[dict]:
    """metrics.csv's rows as the lab writes them: each epoch's last batch logs the losses at its G step; an evaluation
    (`fids`: {epoch index: FID}) logs at the epoch's end without a g_step, at Lightning's optimizer step."""
    rows = []
    for epoch in range(epochs):
        g_step = g_steps_per_epoch * (epoch + 1)
        rows.append({"g_step": g_step, "step": 3 * g_step, "loss/d": 0.5, "loss/g": 1.0, "epoch": epoch})
        if epoch in fids:
            rows.append({"step": 3 * g_step, "classifier/fid": fids[epoch], "epoch": epoch})
    return rows


def test_the_report_at_n_g_steps_reads_each_job_where_it_took_them(tmp_path, composed, drawn, capsys):
    # One D step per G step (10 G steps an epoch, 4 epochs) against two (5 G steps an epoch, 8 epochs), both evaluated
    # every second epoch: G step 20 is epoch 1's end for the first and epoch 3's for the second.
    root = tmp_path / "multirun" / "n_critic"
    for seed in (0, 1):
        write_job(root, f"ablation=baseline,seed={seed}", seed, ["ablation=baseline", f"seed={seed}"],
                  epoch_rows(10, 4, {1: 50 + seed, 3: 30 + seed}), {"status": "ok", "train_time_s": 10}, "right",
                  composed["baseline"])
        write_job(root, f"training.n_critic=2,seed={seed}", 2 + seed, ["training.n_critic=2", f"seed={seed}"],
                  epoch_rows(5, 8, {1: 90 + seed, 3: 45 + seed, 5: 35, 7: 20}), {"status": "ok", "train_time_s": 20},
                  "right", composed["baseline"])
        for job, epoch, pattern in ((f"ablation=baseline,seed={seed}", 1, "left"),
                                    (f"training.n_critic=2,seed={seed}", 1, "bottom"),
                                    (f"training.n_critic=2,seed={seed}", 3, "top")):
            grid = np.zeros((18, 18, 3), dtype=np.uint8)
            grid[PATTERNS[pattern]] = 255
            Image.fromarray(grid).save(root / job / "samples" / f"epoch_{epoch:04d}.png")

    out = build_report(root, g_steps=20)
    assert out["report.md"] == root / "at_20_g_steps" / "report.md" and not (root / "report.md").exists()
    table = read_report_csv(out["report.csv"])
    assert float(table["ablation=baseline"]["classifier/fid_mean"]) == 50.5  # epoch 1's evaluation
    assert float(table["training.n_critic=2"]["classifier/fid_mean"]) == 45.5  # epoch 3's, not epoch 1's 90.5
    assert "train_time_s_mean" not in table["ablation=baseline"]  # the whole run's time: left out
    md = out["report.md"].read_text()
    assert "last logged value up to G step 20 (not its last value" in md and "different G steps" not in md
    fig, _ = drawn["samples.png"]
    baseline, n_critic = (ax.images[0].get_array() for ax in sorted(fig.axes, key=lambda ax: ax.get_position().x0))
    assert baseline[:, :9].mean() == 1 and baseline[:, 9:].mean() == 0  # baseline's grid of epoch 1 (white: 1.0)
    assert n_critic[:9].mean() == 1 and n_critic[9:].mean() == 0  # n_critic=2's of epoch 3, at the same G step

    # G step 15 ends an epoch of the n_critic=2 jobs only: one line names where every job's epochs end together.
    assert main([str(root), "--wandb", "off", "--g-steps", "15"]) == 2
    assert capsys.readouterr().err == (
        "error: --g-steps 15: no epoch of 2 finished job(s) ends at G step 15 (e.g. ablation=baseline,seed=0, whose "
        "epochs end at G steps 10, 20, 30, 40); every finished job's epochs end together at G steps 10, 20, 30, 40: "
        "pass one of them\n")
    assert not (root / "at_15_g_steps").exists()
    assert main([str(root), "--wandb", "off", "--g-steps", "20", "--epochs", "2"]) == 2
    assert capsys.readouterr().err == "error: --epochs and --g-steps cut the jobs in different places: pass one of them.\n"

    # Read after 4 epochs, the baseline has taken 40 G steps and n_critic=2 20: the report says so, and how to compare.
    md = build_report(root, epochs=4)["report.md"].read_text()
    assert ("The jobs were read at different G steps (`ablation=baseline` 40; `training.n_critic=2` 20): a variant with "
            f"fewer G updates may only be behind. `python -m dcgan_lab.report {root} --g-steps 20` compares them at G "
            "step 20.") in md
    assert "different G steps" not in build_report(root)["report.md"].read_text()  # both ended at G step 40


def timed_rows(seconds_per_epoch: float, epochs: int, fids: dict[int, float]) -> list[dict]:
    """epoch_rows with 10 G steps an epoch, plus what callbacks.throughput logs at each epoch's end: the run's seconds of
    training by then, with the epoch's index and without a g_step."""
    rows = []
    for epoch in range(epochs):
        rows += epoch_rows(10, epoch + 1, fids)[-2 if epoch in fids else -1:]
        rows.append({"step": 30 * (epoch + 1), "train_time_s": seconds_per_epoch * (epoch + 1), "epoch": epoch})
    return rows


def test_the_report_within_n_seconds_reads_each_job_at_its_last_epoch_by_then(tmp_path, composed, drawn, capsys):
    # The baseline takes 10 s an epoch, a costlier variant 25 s; both evaluated every epoch. Within 50 s the baseline
    # has trained 5 epochs, the variant 2: each is read at the end of that epoch.
    root = tmp_path / "multirun" / "costly"
    for seed in (0, 1):
        write_job(root, f"ablation=baseline,seed={seed}", seed, ["ablation=baseline", f"seed={seed}"],
                  timed_rows(10, 8, {e: 100 - 10 * e + seed for e in range(8)}), {"status": "ok", "train_time_s": 85},
                  "right", composed["baseline"], header=[*HEADER, "train_time_s"])
        write_job(root, f"training.n_critic=5,seed={seed}", 2 + seed, ["training.n_critic=5", f"seed={seed}"],
                  timed_rows(25, 4, {e: 60 - 10 * e + seed for e in range(4)}), {"status": "ok", "train_time_s": 104},
                  "right", composed["baseline"], header=[*HEADER, "train_time_s"])
        for job, epoch, pattern in ((f"ablation=baseline,seed={seed}", 4, "left"), (f"training.n_critic=5,seed={seed}", 1, "top")):
            grid = np.zeros((18, 18, 3), dtype=np.uint8)
            grid[PATTERNS[pattern]] = 255
            Image.fromarray(grid).save(root / job / "samples" / f"epoch_{epoch:04d}.png")

    assert main([str(root), "--wandb", "off", "--seconds", "55"]) == 0
    out = root / "within_55_seconds"
    table = read_report_csv(out / "report.csv")
    assert float(table["ablation=baseline"]["classifier/fid_mean"]) == 60.5  # epoch 4's (ended at 50 s), not epoch 5's
    assert float(table["training.n_critic=5"]["classifier/fid_mean"]) == 50.5  # epoch 1's (50 s), not epoch 2's (75 s)
    assert [float(table[v]["train_time_s_mean"]) for v in table] == [50, 50]  # the time at the epoch read
    md = (out / "report.md").read_text()
    assert "last logged value within 55 s of training (not its last value" in md
    assert "`ablation=baseline` 50; `training.n_critic=5` 20" in md  # G steps: one read at 50, the other at 20
    fig, _ = drawn["samples.png"]
    baseline, costly = (ax.images[0].get_array() for ax in sorted(fig.axes, key=lambda ax: ax.get_position().x0))
    assert baseline[:, :9].mean() == 1 and baseline[:, 9:].mean() == 0  # the baseline's grid of epoch 4
    assert costly[:9].mean() == 1 and costly[9:].mean() == 0  # the variant's of epoch 1
    # Read at their ends, the whole run's time comes from status.json, the end work included.
    assert [float(v["train_time_s_mean"]) for v in read_report_csv(build_report(root)["report.csv"]).values()] == [85, 104]

    # Past a job's end, before its first epoch ended, jobs that logged no times, other cuts: one line each.
    refusals = {
        "90": "--seconds 90 is past the end of 2 finished job(s) (e.g. ablation=baseline,seed=0: its last epoch "
              "ended at 80.0 s of training); pass --seconds 80 or less",
        "20": "--seconds 20 is before the first epoch of 2 finished job(s) ended (e.g. training.n_critic=5,seed=0: at "
              "25.0 s); pass --seconds 25 or more",
        "0": "--seconds 0.0 must be a number > 0 (the report within that many seconds of training).",
        "nan": "--seconds nan must be a number > 0 (the report within that many seconds of training).",
    }
    for seconds, line in refusals.items():
        assert main([str(root), "--wandb", "off", "--seconds", seconds]) == 2
        assert capsys.readouterr().err == f"error: {line}\n"
    assert main([str(root), "--wandb", "off", "--seconds", "50", "--g-steps", "20"]) == 2
    assert capsys.readouterr().err == "error: --g-steps and --seconds cut the jobs in different places: pass one of them.\n"
    write_job(root, "ablation=baseline,seed=2", 4, ["ablation=baseline", "seed=2"], epoch_rows(10, 8, {7: 30}),
              {"status": "ok", "train_time_s": 80}, "right", composed["baseline"])
    assert main([str(root), "--wandb", "off", "--seconds", "50"]) == 2
    assert capsys.readouterr().err == (
        "error: --seconds 50: 1 finished job(s) logged no train_time_s at their epochs' ends (e.g. "
        "ablation=baseline,seed=2: trained before the lab logged it, or with callbacks.throughput=null); compare them "
        "with --epochs or --g-steps\n")
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith("ablation=") and not p.name.startswith("training.")) == [
        "curves.png", "effects.png", "report.csv", "report.md", "samples.png", "within_55_seconds"]


def test_an_unreadable_status_is_a_failed_job_and_unreadable_overrides_one_line(sweep, capsys):
    status = sweep / "ablation=hinge,seed=1" / "status.json"
    status.write_text(status.read_text()[:10])  # edited or damaged: the lab writes it atomically
    assert main([str(sweep), "--wandb", "off"]) == 0
    table = read_report_csv(sweep / "report.csv")
    assert (table["ablation=hinge"]["ok"], table["ablation=hinge"]["failed"]) == ("2", "1")
    assert "| `ablation=hinge,seed=1` | failed: status.json is unreadable (JSONDecodeError: " in (sweep / "report.md").read_text()
    capsys.readouterr()
    (sweep / "ablation=hinge,seed=2" / ".hydra" / "overrides.yaml").write_text("- [unclosed\n")
    assert main([str(sweep), "--wandb", "off"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {sweep / 'ablation=hinge,seed=2' / '.hydra' / 'overrides.yaml'} is unreadable (")
    assert err.endswith("restore it (Hydra writes one list of overrides) or move that job folder out of the sweep")
    assert "\n" not in err


def test_changes_column_says_what_each_variant_changes_in_the_config(sweep):
    build_report(sweep)
    table = read_report_csv(sweep / "report.csv")
    assert table["ablation=baseline"]["changes"] == ""  # the reference: the row the others are tested against
    assert table["ablation=hinge"]["changes"] == "loss=hinge"  # a group choice, not every key of the loss group
    assert table["ablation=lr_1e-4"]["changes"] == "optimizer.lr_d=0.0001; optimizer.lr_g=0.0001"
    md = (sweep / "report.md").read_text()
    assert "| `ablation=hinge` | loss=hinge | 3/3 |" in md


def test_changes_are_told_against_the_baseline_not_the_value_most_variants_share(tmp_path):
    """A study that tries beta1 = 0 under several variants beside DCGAN's baseline (0.5): by the value most variants
    use, the baseline's row said it changed the betas and the betas row said it changed nothing."""
    settings = {"baseline": ["ablation=baseline"],
                "betas": ["ablation=baseline", "optimizer.betas=[0.0,0.9]"],
                "hinge_betas": ["ablation=hinge", "optimizer.betas=[0.0,0.9]"]}
    root, num = tmp_path / "study", 0
    for name, changes in settings.items():
        composed = compose_config(tmp_path / "compose" / name, ["+sweep=mnist_ablation", "model.ngf=8", *changes])
        for seed in range(2):
            overrides = [*changes, f"seed={seed}", "+sweep=mnist_ablation", "model.ngf=8"]
            write_job(root, ",".join(overrides), num, overrides, rows_for([50, 10 + num], 0.5), {"status": "ok"}, "left",
                      composed)
            num += 1
    build_report(root)
    table = read_report_csv(root / "report.csv")
    assert table["ablation=baseline"]["changes"] == ""
    assert table["ablation=baseline, optimizer.betas=[0.0,0.9]"]["changes"] == "optimizer.betas=[0.0, 0.9]"
    assert table["ablation=hinge, optimizer.betas=[0.0,0.9]"]["changes"] == "loss=hinge; optimizer.betas=[0.0, 0.9]"
    md = (root / "report.md").read_text()
    assert "| `ablation=baseline` | the baseline | 2/2 |" in md
    assert "| `ablation=baseline, optimizer.betas=[0.0,0.9]` | optimizer.betas=[0.0, 0.9] | 2/2 |" in md


def test_further_folders_add_their_jobs_to_the_first_ones_report(tmp_path, capsys, drawn):
    """A variant run today (study/) against a baseline run earlier in another folder (earlier/): `report study
    earlier` tests one against the other, writes into study/ only, and names each folder and each job where it is."""
    from scipy.stats import ttest_ind

    study, earlier = tmp_path / "multirun" / "study", tmp_path / "multirun" / "earlier"
    for num, fid in enumerate([12, 13]):
        write_job(study, f"ablation=hinge,seed={num}", num, ["ablation=hinge", f"seed={num}"], rows_for([40, fid], 0.5),
                  {"status": "ok"}, "top")
    for num, fid in enumerate([20, 22, 21]):
        write_job(earlier, f"ablation=baseline,seed={num}", num, ["ablation=baseline", f"seed={num}"],
                  rows_for([50, fid], 0.5), {"status": "ok"}, "left")
    write_job(earlier, "ablation=baseline,seed=3", 3, ["ablation=baseline", "seed=3"], None,
              {"status": "failed", "error": "RuntimeError: out of memory"}, "left")
    before = sorted(earlier.rglob("*"))

    assert main([str(study), str(earlier), "--wandb", "off"]) == 0
    table = read_report_csv(study / "report.csv")
    assert list(table) == ["ablation=hinge", "ablation=baseline"]  # the first folder's variants first
    assert [table[v]["classifier/fid_n"] for v in table] == ["2", "3"]
    assert float(table["ablation=hinge"]["classifier/fid_p"]) == pytest.approx(
        ttest_ind([12, 13], [20, 22, 21], equal_var=False).pvalue)
    md = (study / "report.md").read_text()
    assert md.startswith(f"# Sweep report: {study} + {earlier}\n")
    assert f"Jobs of 2 folders: `{study}` (2), `{earlier}` (4)." in md
    assert "| `../earlier/ablation=baseline,seed=3` | failed: RuntimeError: out of memory |" in md
    assert sorted(earlier.rglob("*")) == before  # nothing written where the added jobs are
    compare = tmp_path / "compare"  # a folder of its own for the comparison: no jobs there
    compare.mkdir()
    assert main([str(compare), str(study), str(earlier), "--wandb", "off"]) == 0
    assert read_report_csv(compare / "report.csv") == table
    assert f"Jobs of 3 folders: `{compare}` (0), `{study}` (2), `{earlier}` (4)." in (compare / "report.md").read_text()
    assert "| `../multirun/earlier/ablation=baseline,seed=3` | failed:" in (compare / "report.md").read_text()
    fig, _ = drawn["samples.png"]
    assert [ax.get_title() for ax in sorted(fig.axes, key=lambda ax: ax.get_position().x0)] == [
        "ablation=hinge\n(seed 0)", "ablation=baseline\n(seed 0)"]

    # Cut reports go into the first folder too, and name both folders in the command they suggest.
    assert main([str(study), str(earlier), "--wandb", "off", "--epochs", "1"]) == 0
    assert read_report_csv(study / "after_1_epochs" / "report.csv")["ablation=hinge"]["classifier/fid_mean"] == "40.0"
    assert main([str(study), str(earlier), "--wandb", "off", "--g-steps", "15"]) == 2
    assert "(e.g. ablation=hinge,seed=0, whose epochs end at G steps 10, 20)" in capsys.readouterr().err

    # A folder inside another (or the same twice) would count its jobs twice; a missing one is not a sweep.
    for folders in ([study, study], [tmp_path / "multirun", earlier], [earlier, earlier / "ablation=baseline,seed=0"]):
        assert main([*map(str, folders), "--wandb", "off"]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"error: {folders[1]} and {folders[0]} hold the same jobs (one is inside the other): pass only "
                       f"{folders[0]}, whose report takes every job below it.")
    assert main([str(study), str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {tmp_path / 'missing'} is not a folder: pass a sweep folder "
                                               "such as multirun/<date>/<time>.")


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


@pytest.fixture
def plain_sweep(tmp_path) -> Path:
    """A sweep with no ablation=baseline (`python train.py -m loss=bce,hinge optimizer.lr_g=1e-4,2e-4 seed=0,1,2`),
    its values as Hydra writes them back (1e-4 -> 0.0001). Final FIDs: bce/1e-4 10, 11, 12; hinge/1e-4 20, 22, 27;
    hinge/2e-4 30, 31, 35."""
    root = tmp_path / "multirun" / "plain"
    num = 0
    for loss, lr, fids in (("bce", "0.0001", [10, 11, 12]), ("hinge", "0.0001", [20, 22, 27]), ("hinge", "0.0002", [30, 31, 35])):
        for seed, fid in enumerate(fids):
            overrides = [f"loss={loss}", f"optimizer.lr_g={lr}", f"seed={seed}", "model.conditional=True"]
            write_job(root, ",".join(overrides), num, overrides, rows_for([50, fid], 0.5), {"status": "ok"}, "left")
            num += 1
    return root


def test_baseline_named_on_the_command_line_gets_the_tests(plain_sweep, capsys):
    from scipy.stats import ttest_ind

    assert main([str(plain_sweep), "--wandb", "off"]) == 0
    md = (plain_sweep / "report.md").read_text()
    assert (f"No baseline variant (`ablation=baseline`) in this table: no tests, no bold. Name one with "
            f"`python -m dcgan_lab.report {plain_sweep} --baseline loss=bce --baseline optimizer.lr_g=0.0001`.") in md
    assert read_report_csv(plain_sweep / "report.csv")["loss=hinge, optimizer.lr_g=0.0001"]["classifier/fid_p"] == ""

    # Values as typed (1e-4, true) match what Hydra wrote back (0.0001, True); two overrides narrow it to one variant.
    assert main([str(plain_sweep), "--wandb", "off", "--baseline", "optimizer.lr_g=1e-4", "--baseline", "loss=bce",
                 "--baseline", "model.conditional=true"]) == 0
    md = (plain_sweep / "report.md").read_text()
    assert "Baseline (`--baseline`): `loss=bce, optimizer.lr_g=0.0001`." in md and "No baseline variant" not in md
    table = read_report_csv(plain_sweep / "report.csv")
    expected = ttest_ind([20, 22, 27], [10, 11, 12], equal_var=False).pvalue
    assert float(table["loss=hinge, optimizer.lr_g=0.0001"]["classifier/fid_p"]) == pytest.approx(expected)
    assert table["loss=bce, optimizer.lr_g=0.0001"]["classifier/fid_p"] == ""  # the baseline is not tested against itself
    assert table["loss=bce, optimizer.lr_g=0.0001"]["significant_best_in"] == "classifier/fid"  # best, and p < 0.05 vs both
    assert "| `loss=bce, optimizer.lr_g=0.0001` | the baseline | 3/3 | **11 ± 1 (3)** |" in md

    capsys.readouterr()
    for args, line in (
        (["--baseline", "optimizer.lr_g=1e-4"],
         "error: --baseline optimizer.lr_g=1e-4 matches 2 variants of one table (loss=bce, optimizer.lr_g=0.0001; "
         "loss=hinge, optimizer.lr_g=0.0001): add another --baseline override that tells them apart, or name every "
         "override of the one you mean"),
        (["--baseline", "loss=wgan_gp"],
         "error: --baseline loss=wgan_gp matches no variant of this sweep; its variants: loss=bce, optimizer.lr_g=0.0001; "
         "loss=hinge, optimizer.lr_g=0.0001; loss=hinge, optimizer.lr_g=0.0002"),
    ):
        assert main([str(plain_sweep), "--wandb", "off", *args]) == 2
        assert capsys.readouterr().err.strip() == line


def test_a_baseline_named_by_all_its_overrides_wins_over_variants_that_ran_more(tmp_path, capsys):
    """A folder with `loss=bce`, `loss=bce optimizer.betas=[0.0,0.9]` (a change added to the baseline's setting) and
    `loss=hinge`: `--baseline loss=bce` matches two variants, and means the one that ran nothing else."""
    from scipy.stats import ttest_ind

    root = tmp_path / "multirun" / "nested"
    num = 0
    for changes, fids in ((["loss=bce"], [10, 11, 12]), (["loss=bce", "optimizer.betas=[0.0,0.9]"], [20, 22, 27]),
                          (["loss=hinge"], [30, 31, 35])):
        for seed, fid in enumerate(fids):
            overrides = [*changes, f"seed={seed}", "model.conditional=True"]
            write_job(root, ",".join(overrides), num, overrides, rows_for([50, fid], 0.5), {"status": "ok"}, "left")
            num += 1
    assert main([str(root), "--wandb", "off", "--baseline", "loss=bce"]) == 0
    md = (root / "report.md").read_text()
    assert "Baseline (`--baseline`): `loss=bce`." in md
    p = read_report_csv(root / "report.csv")["loss=bce, optimizer.betas=[0.0,0.9]"]["classifier/fid_p"]
    assert float(p) == pytest.approx(ttest_ind([20, 22, 27], [10, 11, 12], equal_var=False).pvalue)
    # Named by the override only the longer variant ran, that one is the baseline.
    assert main([str(root), "--wandb", "off", "--baseline", "optimizer.betas=[0.0,0.9]"]) == 0
    assert "Baseline (`--baseline`): `loss=bce, optimizer.betas=[0.0,0.9]`." in (root / "report.md").read_text()


def test_of_several_ablation_baseline_variants_the_plain_one_is_the_baseline_or_one_line_asks(tmp_path, capsys):
    """Runs added beside a sweep as `ablation=baseline model.spectral_norm_d=True` are a variant of their own: the
    report compared every row with whichever `ablation=baseline` variant came first, and said nothing."""
    from scipy.stats import ttest_ind

    def sweep(name, variants):
        root, num = tmp_path / name, 0
        for changes, fids in variants:
            for seed, fid in enumerate(fids):
                overrides = [*changes, f"seed={seed}"]
                write_job(root, ",".join(overrides), num, overrides, rows_for([50, fid], 0.5), {"status": "ok"}, "left")
                num += 1
        return root

    root = sweep("added", [(["ablation=baseline", "model.spectral_norm_d=True"], [20, 22, 27]),
                           (["ablation=baseline"], [10, 11, 12]), (["ablation=hinge"], [30, 31, 35])])
    assert main([str(root), "--wandb", "off"]) == 0
    assert ("Baseline: `ablation=baseline`, of the 2 variants that ran `ablation=baseline` the one that ran nothing "
            "else") in (root / "report.md").read_text()
    p = read_report_csv(root / "report.csv")["ablation=baseline, model.spectral_norm_d=True"]["classifier/fid_p"]
    assert float(p) == pytest.approx(ttest_ind([20, 22, 27], [10, 11, 12], equal_var=False).pvalue)

    capsys.readouterr()
    root = sweep("neither", [(["ablation=baseline", "model.spectral_norm_d=True"], [20, 22]),
                             (["ablation=baseline", "loss=hinge"], [10, 11]), (["ablation=hinge"], [30, 31])])
    assert main([str(root), "--wandb", "off"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: ablation=baseline matches 2 variants of one table (ablation=baseline, model.spectral_norm_d=True; "
        "ablation=baseline, loss=hinge): name the one to compare with: --baseline <override> (repeated)")
    assert not (root / "report.md").exists()

    # `python train.py -m ablation=baseline training.flip_prob=0.0,0.2`: every job ran ablation=baseline, so it tells
    # no variant apart; the report is written without tests and says how to name the baseline.
    root = sweep("every", [(["ablation=baseline", "training.flip_prob=0.0"], [10, 11]),
                           (["ablation=baseline", "training.flip_prob=0.2"], [20, 21])])
    assert main([str(root), "--wandb", "off"]) == 0
    assert ("Every job ran `ablation=baseline`, so it names no baseline in this table: no tests, no bold. Name one with "
            f"`python -m dcgan_lab.report {root} --baseline training.flip_prob=0.0`.") in (root / "report.md").read_text()
    assert read_report_csv(root / "report.csv")["training.flip_prob=0.2"]["classifier/fid_p"] == ""


def test_separate_runs_compare_with_the_runs_of_the_shared_settings_alone(tmp_path):
    """`python -m dcgan_lab.report outputs/<date>` over runs started one by one (`python train.py [seed=1]`, then
    `python train.py loss=hinge [seed=1]`): the runs without an override of their own are the baseline."""
    from scipy.stats import ttest_ind

    day = tmp_path / "outputs" / "2026-01-31"
    for time, overrides, fid in (("10-00-00", [], 10), ("10-30-00", ["seed=1"], 12),
                                 ("11-00-00", ["loss=hinge"], 20), ("11-30-00", ["loss=hinge", "seed=1"], 23)):
        write_job(day, time, 0, overrides, rows_for([50, fid], 0.5), {"status": "ok"}, "left")
    assert main([str(day), "--wandb", "off"]) == 0
    md = (day / "report.md").read_text()
    assert ("Baseline: `(no override)`, the jobs that ran only the settings every job shares (no `ablation=baseline` "
            "in this table; `--baseline <override>` names another).") in md and "No baseline variant" not in md
    table = read_report_csv(day / "report.csv")
    assert float(table["loss=hinge"]["classifier/fid_p"]) == pytest.approx(
        ttest_ind([20, 23], [10, 12], equal_var=False).pvalue)
    assert table["(no override)"]["classifier/fid_p"] == ""  # the baseline is not tested against itself

    assert main([str(day), "--wandb", "off", "--baseline", "loss=hinge"]) == 0  # another one, named
    table = read_report_csv(day / "report.csv")
    assert table["loss=hinge"]["classifier/fid_p"] == "" and table["(no override)"]["classifier/fid_p"] != ""
    assert "Baseline (`--baseline`): `loss=hinge`." in (day / "report.md").read_text()


def test_seeds_added_later_by_another_command_join_their_variants(tmp_path):
    """A sweep (`logger=csv`), then more seeds of two of its rows run into a folder inside it with another logger
    (`hydra.sweep.dir=<sweep>/more_seeds`): the sweep's report has each variant once, with all its seeds."""
    from scipy.stats import ttest_ind

    study = tmp_path / "multirun" / "study"
    fids = {("baseline", 0): 20, ("baseline", 1): 22, ("layer_norm", 0): 40, ("layer_norm", 1): 38, ("silu", 0): 13,
            ("silu", 1): 14, ("baseline", 2): 18, ("layer_norm", 2): 41}
    for num, ((ablation, seed), fid) in enumerate(fids.items()):
        folder, logger = (study, ["logger=csv"]) if seed < 2 else (study / "more_seeds", ["logger=wandb", "console=log",
                                                                                           "callbacks.progress_bar=null"])
        write_job(folder, f"ablation={ablation},seed={seed}", num,
                  [f"ablation={ablation}", f"seed={seed}", "+sweep=arch_ablation", *logger],
                  rows_for([60, fid], 0.5), {"status": "ok"}, "left")
    assert main([str(study), "--wandb", "off", "--correction", "none"]) == 0
    table = read_report_csv(study / "report.csv")
    assert list(table) == ["ablation=baseline", "ablation=layer_norm", "ablation=silu"]
    assert [table[v]["classifier/fid_n"] for v in table] == ["3", "3", "2"]
    assert float(table["ablation=layer_norm"]["classifier/fid_p"]) == pytest.approx(
        ttest_ind([40, 38, 41], [20, 22, 18], equal_var=False).pvalue)
    assert "logger" not in (study / "report.md").read_text().split("| variant |")[0]  # not a shared setting either


def test_seeds_run_later_keep_the_sweeps_order_of_variants_and_its_first_seeds_in_the_samples(tmp_path, drawn):
    """Hydra numbers each sweep command's jobs from 0: the jobs run later into <sweep>/more_seeds come after the
    sweep's own, whatever their numbers, so the variants keep the sweep's order and samples.png its seed 0."""
    study = tmp_path / "multirun" / "study"
    runs = [(study, ("baseline", 0), ("baseline", 1), ("layer_norm", 0), ("layer_norm", 1), ("silu", 0), ("silu", 1)),
            (study / "more_seeds", ("silu", 2), ("layer_norm", 2))]
    for folder, *jobs in runs:
        for num, (ablation, seed) in enumerate(jobs):
            write_job(folder, f"ablation={ablation},seed={seed}", num, [f"ablation={ablation}", f"seed={seed}"],
                      rows_for([60, 20], 0.5), {"status": "ok"}, "left")
        (folder / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"mode": "MULTIRUN"}}))
    build_report(study)
    assert list(read_report_csv(study / "report.csv")) == ["ablation=baseline", "ablation=layer_norm", "ablation=silu"]
    fig, _ = drawn["samples.png"]
    assert [ax.get_title() for ax in sorted(fig.axes, key=lambda ax: ax.get_position().x0)] == [
        "ablation=baseline\n(seed 0)", "ablation=layer_norm\n(seed 0)", "ablation=silu\n(seed 0)"]


def test_holm_adjusts_p_values_step_down():
    from dcgan_lab.report import holm

    # Sorted 0.01, 0.03, 0.04: x3 = 0.03, x2 = 0.06, x1 = 0.04 -> kept at 0.06 (never below the one before).
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2]) == [0.2]
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1


def test_each_interval_clears_zero_exactly_when_holm_calls_its_change_significant():
    """Holm's levels: over random p-values, an interval at its level excludes 0 (level > p) iff Holm's adjusted
    p < 0.05. Bonferroni's level (0.05 / m for all) breaks this for the second smallest p of [0.001, 0.02, 0.3]."""
    from dcgan_lab.report import holm, holm_levels

    assert holm_levels([0.001, 0.02, 0.3], 0.05) == pytest.approx([0.05 / 3, 0.05 / 2, 0.05])
    assert holm_levels([0.3, 0.01, 0.04], 0.05) == pytest.approx([0.05 / 2, 0.05 / 3, 0.05 / 2])  # stops at 0.04
    rng = np.random.default_rng(0)
    for _ in range(500):
        p_values = list(rng.uniform(0, 0.1, size=rng.integers(2, 8)) ** 2 * 10)
        levels = holm_levels(p_values, 0.05)
        assert [p < level for p, level in zip(p_values, levels)] == [a < 0.05 for a in holm(p_values)], p_values


def test_several_variants_p_values_are_corrected_together(tmp_path):
    # Two variants each "significantly" worse than the baseline on their own (p 0.032 and 0.042), but two tests at
    # 0.05 find one such difference by chance far more often than one test: Holm's adjusted p is 0.063 for both.
    root = tmp_path / "multirun" / "two"
    num = 0
    for ablation, fids in (("baseline", [10, 11, 12]), ("x", [14, 16, 18]), ("y", [14, 15, 18])):
        for seed, fid in enumerate(fids):
            overrides = [f"ablation={ablation}", f"seed={seed}"]
            write_job(root, ",".join(overrides), num, overrides, rows_for([50, fid], 0.5), {"status": "ok"}, "left")
            num += 1
    assert main([str(root), "--wandb", "off"]) == 0
    md = (root / "report.md").read_text()
    assert "| `ablation=x` | — | 3/3 | 16 ± 2 (3) · n.s. after Holm (p=0.032, Holm p=0.063) |" in md
    assert "| `ablation=y` | — | 3/3 | 15.67 ± 2.082 (3) · n.s. after Holm (p=0.042, Holm p=0.063) |" in md
    assert "| `ablation=baseline` | the baseline | 3/3 | 11 ± 1 (3) |" in md  # best mean, but not different after correction
    assert "corrected together by Holm's method" in md
    table = read_report_csv(root / "report.csv")
    assert float(table["ablation=x"]["classifier/fid_p"]) == pytest.approx(0.0315622316)
    assert float(table["ablation=x"]["classifier/fid_p_adjusted"]) == pytest.approx(2 * 0.0315622316)
    assert table["ablation=baseline"]["significant_best_in"] == ""

    assert main([str(root), "--wandb", "off", "--correction", "none"]) == 0
    md = (root / "report.md").read_text()
    assert "| `ablation=x` | — | 3/3 | 16 ± 2 (3) · p=0.032 |" in md and "uncorrected (`--correction none`)" in md
    assert "| `ablation=baseline` | the baseline | 3/3 | **11 ± 1 (3)** |" in md
    assert read_report_csv(root / "report.csv")["ablation=baseline"]["significant_best_in"] == "classifier/fid"


@pytest.mark.parametrize("correction, levels", [("holm", {"x": 0.975, "y": 0.95}), ("none", {"x": 0.95, "y": 0.95})])
def test_each_difference_from_the_baseline_comes_with_its_confidence_interval(tmp_path, correction, levels):
    """How large a change is and how sure: variant - baseline with its Welch interval, as scipy computes it
    independently; in report.csv for every metric, and in report.md for the table's first ranked metric. With
    Holm's correction each interval is at the level Holm tested it: x (the smaller p, significant) at 1 - 0.05/2,
    then y at 1 - 0.05/1; without, both at 95%."""
    from scipy.stats import ttest_ind

    root = tmp_path / "multirun" / "ci"
    fids = {"baseline": [10.0, 11.0, 12.5], "x": [14.0, 16.5, 18.0, 17.0], "y": [9.0, 10.5, 13.0]}
    num = 0
    for ablation, values in fids.items():
        for seed, fid in enumerate(values):
            overrides = [f"ablation={ablation}", f"seed={seed}"]
            write_job(root, ",".join(overrides), num, overrides, rows_for([50, fid], 0.5), {"status": "ok"}, "left")
            num += 1
    assert main([str(root), "--wandb", "off", "--correction", correction]) == 0
    table = read_report_csv(root / "report.csv")
    expected = {}
    for ablation in ("x", "y"):
        row = table[f"ablation={ablation}"]
        interval = ttest_ind(fids[ablation], fids["baseline"], equal_var=False).confidence_interval(levels[ablation])
        difference = sum(fids[ablation]) / len(fids[ablation]) - sum(fids["baseline"]) / 3
        assert float(row["classifier/fid_diff"]) == pytest.approx(difference)
        assert float(row["classifier/fid_diff_ci_low"]) == pytest.approx(interval.low)
        assert float(row["classifier/fid_diff_ci_high"]) == pytest.approx(interval.high)
        assert float(row["classifier/fid_diff_ci_level"]) == pytest.approx(levels[ablation])
        expected[ablation] = (difference, interval.low, interval.high)
    assert table["ablation=baseline"]["classifier/fid_diff"] == ""
    assert expected["x"][1] > 0 > expected["y"][1]  # x is worse for sure; y's interval spans no change
    md = (root / "report.md").read_text()

    def signed(value):
        return ("+" if value > 0 else "") + f"{value:.4g}"

    at = {"x": " at 97.5%", "y": " at 95%"} if correction == "holm" else {"x": "", "y": ""}
    shown = "; ".join(f"`ablation={a}` {signed(d)} [{signed(lo)}, {signed(hi)}]{at[a]}"
                      for a, (d, lo, hi) in expected.items())
    kind = ("Welch confidence intervals, each at the level Holm's correction tested it among the 2 variants (the "
            "smallest p at 97.5%, the next at 95%, ...), so an interval clears 0 exactly when its Holm p < 0.05"
            if correction == "holm" else "95% confidence interval, Welch, not corrected")
    assert f"`classifier/fid` against the baseline (lower is better; difference of means, {kind}): {shown}." in md


def test_the_changes_cell_gives_a_variants_cost_against_the_baseline(tmp_path, composed):
    """The report's cost from the `cost/*` row each job logs at its start (the real sweep: test_sweep.py's slow
    test): in percent against the baseline's, in the changes cell, only where the networks differ."""
    root = tmp_path / "multirun" / "cost"
    costs = {"baseline": (1.0e6, 3.0e7, 6.0e5, 3.0e7), "hinge": (1.0e6, 3.0e7, 6.0e5, 3.0e7),
             "lr_1e-4": (1.05e6, 4.05e7, 6.06e5, 3.3e7)}  # G +5.0% params, +35% FLOPs; D +1.0%, +10%
    num = 0
    for variant, (g_params, g_flops, d_params, d_flops) in costs.items():
        for seed in (0, 1):
            overrides = [f"ablation={variant}", f"seed={seed}"]
            job = write_job(root, ",".join(overrides), num, overrides, None, {"status": "ok"}, "left",
                            composed=composed[variant])
            rows = [{"step": 0, "cost/g_params": g_params, "cost/g_flops": g_flops, "cost/d_params": d_params,
                     "cost/d_flops": d_flops}, *rows_for([20.0 + num], 0.5)]
            with open(job / "metrics.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=sorted({k for row in rows for k in row}))
                writer.writeheader()
                writer.writerows(rows)
            num += 1
    assert main([str(root), "--wandb", "off"]) == 0
    md = (root / "report.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| `ablation=")}
    assert "cost: FLOPs/image G +35%, D +10%; params G +5.0%, D +1.0% |" in rows["`ablation=lr_1e-4`"]
    assert "cost:" not in rows["`ablation=baseline`"] and "cost:" not in rows["`ablation=hinge`"]  # same networks
    assert float(read_report_csv(root / "report.csv")["ablation=lr_1e-4"]["cost/g_flops_mean"]) == 4.05e7
    # The networks do not change with the epoch: the report after 1 epoch gives the same cost (logged before it).
    assert main([str(root), "--epochs", "1", "--wandb", "off"]) == 0
    md = (root / "after_1_epochs" / "report.md").read_text()
    assert "cost: FLOPs/image G +35%, D +10%; params G +5.0%, D +1.0% |" in md
    assert float(read_report_csv(root / "after_1_epochs" / "report.csv")["ablation=lr_1e-4"]["cost/g_flops_mean"]) == 4.05e7


def test_make_report_picks_the_newest_sweep_folder_not_a_job_or_a_report_folder(tmp_path):
    # `make report` with no SWEEP=: the folder with Hydra's multirun.yaml written last, at multirun/<date>/<time>/
    # or multirun/<name>/ (hydra.sweep.dir), never a job folder or an after_<N>_epochs/ that sorts after it.
    import os
    import shutil
    import subprocess

    from tests.conftest import ROOT

    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed").touch()  # set up already: make prints only the report command

    # Not the settings of a make that runs these tests (`make test`): its MAKEFLAGS would reach this one.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}

    def make_report(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["make", "--no-print-directory", "-n", "report", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True)

    def command(*args: str) -> list[str]:
        return next(line for line in make_report(*args).stdout.splitlines() if "-m dcgan_lab.report" in line).split()

    refused = make_report()
    assert refused.returncode != 0
    assert "no sweep under multirun/ (no multirun.yaml): run python train.py -m ... first, or pass SWEEP=<sweep folder>" in refused.stderr

    older, newer = tmp_path / "multirun" / "2026-01-02" / "10-00-00", tmp_path / "multirun" / "study"
    for when, sweep in enumerate((older, newer)):
        (sweep / "ablation=hinge,seed=0" / ".hydra").mkdir(parents=True)
        (sweep / "after_5_epochs").mkdir()
        (sweep / "multirun.yaml").write_text("hydra: {}\n")
        os.utime(sweep / "multirun.yaml", (1_700_000_000 + when, 1_700_000_000 + when))
    assert command()[-1] == "multirun/study"
    os.utime(older / "multirun.yaml", (1_800_000_000, 1_800_000_000))
    assert command()[-1] == "multirun/2026-01-02/10-00-00"
    named = command("SWEEP=multirun/study", "BASELINE=loss=bce optimizer.lr_g=1e-4")
    assert named[-5:] == ["multirun/study", "--baseline", "loss=bce", "--baseline", "optimizer.lr_g=1e-4"]
    assert command("SWEEP=multirun/study multirun/2026-01-02/10-00-00")[-2:] == ["multirun/study", "multirun/2026-01-02/10-00-00"]
