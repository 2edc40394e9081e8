"""What the dashboards show: every image on W&B and TensorBoard is the PNG the lab wrote, pixel for pixel;
TensorBoard's scalars are metrics.csv and its hparams the run config; a sweep's report joins its W&B group.

One real run feeds the W&B and TensorBoard tests: a progressive DCGAN (so per-resolution grids too) with
both loggers (`logger=[wandb,tensorboard]`), two epochs (two epoch grids and last.png) and the metric
figures of the second epoch's evaluation.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from dcgan_lab.pipeline import train

from .conftest import FAST, compose_config
from .pixels import assert_same_pixels, pixels
from .wandb_records import history, logged_checkpoints, logged_images, logged_videos, offline_run, the_offline_run

# 2 epochs x 4 batches of 16 images; growth 4x4 (16 images), 8x8 and 16x16 (32 fading + 16 stable each),
# then 32x32: res_004/008/016 end at batches 0, 3 and 6, res_032 is written at the end.
DASHBOARD_RUN = [
    "logger=[wandb,tensorboard]", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
    "model=progressive", "model.growth.fade_images=32", "model.growth.stable_images=16",
    "metrics=default", "metrics.n_samples=100", "metrics.every_n_epochs=2", "metrics.enabled=[classifier,clustering,inception]",
]


@pytest.fixture(scope="module")
def dashboard_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dashboards")
    with pytest.MonkeyPatch.context() as env:  # conftest's autouse W&B settings are per test; this runs once
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_SILENT", "true")
        env.delenv("WANDB_API_KEY", raising=False)
        env.setenv("WANDB_DIR", str(tmp))
        env.setenv("WANDB_CONFIG_DIR", str(tmp / ".wandb_config"))
        result = train(compose_config(tmp / "run", FAST + DASHBOARD_RUN))
    return Path(result["output_dir"])


def local_pngs(run_dir: Path) -> dict[str, list[Path]]:
    """The dashboard key of each PNG in the run folder, and the PNGs of each key in the order written."""
    samples, metrics = run_dir / "samples", run_dir / "metrics"
    expected = {"samples": [*sorted(samples.glob("epoch_*.png")), samples / "last.png"]}
    if (samples / "interpolation.png").exists():
        expected["samples/interpolation"] = [samples / "interpolation.png"]
    for grid in sorted(samples.glob("res_*.png")):
        expected[f"samples/{grid.stem}"] = [grid]
    for figure in sorted(metrics.glob("epoch*_*.png")):
        expected.setdefault(f"metrics/{figure.stem.split('_', 1)[1]}", []).append(figure)
    return expected


def test_the_run_wrote_every_kind_of_image(dashboard_run):
    expected = local_pngs(dashboard_run)
    assert [p.name for p in expected["samples"]] == ["epoch_0000.png", "epoch_0001.png", "last.png"]
    assert [k for k in expected if k.startswith("samples/")] == ["samples/interpolation"] + [
        f"samples/res_{r:03d}" for r in (4, 8, 16, 32)]
    walk = pixels(expected["samples/interpolation"][0])
    assert walk.shape == (8 * 34 + 2, 10 * 34 + 2, 4)  # 8 walks of 10 steps at the final 32x32 resolution
    assert [p.name for p in expected["metrics/class_histogram"]] == ["epoch0001_class_histogram.png"]
    assert len([k for k in expected if k.startswith("metrics/")]) == 7
    assert pixels(expected["samples"][-1])[..., :3].max() > 32  # digits, not a [0, 1] float grid written as bytes


def test_wandb_shows_each_local_png_pixel_for_pixel(dashboard_run):
    run_dir, run_file = the_offline_run(dashboard_run)
    shown, expected = logged_images(run_dir, run_file), local_pngs(dashboard_run)
    assert sorted(shown) == sorted(expected)
    for key, local_files in expected.items():
        assert len(shown[key]) == len(local_files), key
        for (media, caption, _row), local in zip(shown[key], local_files):
            assert_same_pixels(media, local, f"W&B {key}")
            assert caption.split(",")[0] == local.relative_to(dashboard_run).as_posix()  # the caption names the file
    run = offline_run(run_file)
    assert json.loads(run["config"]["model"])["growth"]["fade_images"] == 32  # the resolved config


def test_wandb_plays_the_progress_gif_the_run_wrote(dashboard_run):
    """samples/progress.gif (the epoch grids in order) on W&B byte for byte, once, at the end. The progressive run's
    first grid is smaller than its last: the GIF scales it up to the last grid's size."""
    gif = dashboard_run / "samples" / "progress.gif"
    with Image.open(gif) as animation:
        assert animation.n_frames == 2
        last_grid = Image.open(dashboard_run / "samples" / "epoch_0001.png")
        assert animation.size == (last_grid.width, last_grid.height + 16)  # + the caption strip
    assert Image.open(dashboard_run / "samples" / "epoch_0000.png").size != last_grid.size
    run_dir, run_file = the_offline_run(dashboard_run)
    shown = logged_videos(run_dir, run_file)
    assert list(shown) == ["samples/progress"] and len(shown["samples/progress"]) == 1
    media, caption, _row = shown["samples/progress"][0]
    assert media.read_bytes() == gif.read_bytes() and caption == "epochs 0-1"


def test_tensorboard_shows_each_local_png_pixel_for_pixel_at_the_step_of_its_losses(dashboard_run):
    events = read_tensorboard(dashboard_run / "tensorboard")
    expected = local_pngs(dashboard_run)
    assert sorted(events.Tags()["images"]) == sorted([*expected, "samples/progress"])  # + the GIF (test below)
    for key, local_files in expected.items():
        shown = events.Images(key)
        assert len(shown) == len(local_files), key
        for event, local in zip(shown, local_files):
            assert_same_pixels(event.encoded_image_string, local, f"TensorBoard {key}")
    # Each epoch's grid and figures sit at the step of that epoch's last losses, not at Lightning's global_step.
    last_loss_step = {}
    for row in read_csv_rows(dashboard_run / "metrics.csv"):
        if row.get("loss/d"):
            last_loss_step[int(float(row["epoch"]))] = int(row["step"])
    assert [e.step for e in events.Images("samples")] == [last_loss_step[0], last_loss_step[1], last_loss_step[1]]
    assert [e.step for e in events.Images("metrics/class_histogram")] == [last_loss_step[1]]


def test_tensorboard_plays_the_progress_gif_the_run_wrote(dashboard_run):
    """samples/progress.gif on TensorBoard's images tab byte for byte (the browser plays it), once, with the
    last grid's step."""
    events = read_tensorboard(dashboard_run / "tensorboard")
    gif = dashboard_run / "samples" / "progress.gif"
    shown = events.Images("samples/progress")
    assert len(shown) == 1 and shown[0].encoded_image_string == gif.read_bytes()
    assert shown[0].step == events.Images("samples")[-1].step
    with Image.open(gif) as animation:
        assert (shown[0].width, shown[0].height) == animation.size and animation.n_frames == 2


def test_tensorboard_scalars_are_metrics_csv_and_its_hparams_the_run_config(dashboard_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = read_tensorboard(dashboard_run / "tensorboard")
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in read_csv_rows(dashboard_run / "metrics.csv"):
        for name, cell in row.items():
            if name != "step" and cell != "":
                expected.setdefault(name, []).append((int(row["step"]), float(cell)))
    assert sorted(events.Tags()["scalars"]) == sorted(expected)
    assert {"loss/d", "loss/g", "classifier/fid", "progressive/resolution"} <= set(expected)
    for name, series in expected.items():
        logged = [(e.step, e.value) for e in events.Scalars(name)]
        assert [step for step, _ in logged] == [step for step, _ in series], name
        # TensorBoard stores float32
        np.testing.assert_allclose([v for _, v in logged], np.float32([v for _, v in series]), rtol=1e-6, err_msg=name)

    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["loss.d._target_"].string_value == "dcgan_lab.losses.bce_d"
    assert hparams["model.growth.fade_images"].number_value == 32
    assert hparams["seed"].number_value == 42 and hparams["model.spectral_norm_d"].string_value == "false"


def read_tensorboard(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # 0 = keep every event (the defaults sample 4 images per tag); purging stays on, as in TensorBoard itself.
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return events


def read_csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("choice, loggers", [
    ("tensorboard", ["tensorboard"]),
    ("[wandb,tensorboard]", ["wandb", "tensorboard"]),
    ("[csv,tensorboard]", ["tensorboard"]),
])
def test_logger_choices_compose_into_one_entry_per_dashboard(tmp_path, choice, loggers):
    cfg = compose_config(tmp_path / "run", [f"logger={choice}"])
    assert list(cfg.logger) == loggers
    if "tensorboard" in loggers:
        assert cfg.logger.tensorboard.save_dir == str(tmp_path / "run")


def write_sweep_job(sweep: Path, num: int, ablation: str, fid: float, logger: dict) -> None:
    """A finished job folder as a `+sweep=mnist_ablation` multirun leaves it (what the report reads)."""
    job = sweep / f"ablation={ablation}"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- ablation={ablation}\n- +sweep=mnist_ablation\n")
    (job / ".hydra" / "hydra.yaml").write_text(json.dumps({"hydra": {
        "job": {"num": num}, "sweep": {"dir": str(sweep)}, "runtime": {"choices": {"sweep": "mnist_ablation"}}}}))
    (job / "config.yaml").write_text(json.dumps({"seed": 0, "logger": logger}))
    (job / "metrics.csv").write_text(f"epoch,g_step,loss/d,classifier/fid,step\n0,10,0.{num + 5},,9\n0,,,{fid},9\n")
    (job / "status.json").write_text(json.dumps({"status": "ok", "train_time_s": 10.0 + num}))
    (job / "samples").mkdir()
    digits = np.zeros((34, 34, 3), np.uint8)
    digits[4:30, 8 + 4 * num:14 + 4 * num] = 255  # a bar per job, so samples.png has something to show
    Image.fromarray(digits).save(job / "samples" / "last.png")


WANDB_JOBS = {"wandb": {"project": "dcgan_lab", "mode": "auto", "group": None, "tags": [], "name": None}}


def test_the_report_joins_the_sweeps_wandb_group_with_its_table_and_figures(tmp_path, capsys):
    from dcgan_lab.report import main as report_main

    sweep = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    write_sweep_job(sweep, 0, "baseline", 30.0, WANDB_JOBS)
    write_sweep_job(sweep, 1, "hinge", 20.0, WANDB_JOBS)
    assert report_main([str(sweep)]) == 0  # --wandb auto: the jobs logged to W&B, so does the report
    run_dir, run_file = the_offline_run(sweep)
    assert f"W&B report run: {run_dir}" in capsys.readouterr().out
    run = offline_run(run_file)
    # The group the jobs' runs are in (dcgan_lab.sweep.sweep_group): '<sweep name>-<date>-<time>'.
    assert (run["group"], run["name"], run["job_type"], run["tags"]) == (
        "mnist_ablation-2026-01-01-12-00-00", "report", "report", ["report"])

    rows = history(run_file)
    table_file = next(row["report/table"]["path"] for row in rows if "report/table" in row)
    table = json.loads((run_dir / "files" / table_file).read_text())
    with open(sweep / "report.csv", newline="") as handle:
        columns, *expected = list(csv.reader(handle))
    assert table["columns"] == columns
    assert [[_cell_text(cell) for cell in row] for row in table["data"]] == expected
    fid_mean = table["data"][1][columns.index("classifier/fid_mean")]
    assert fid_mean == 20.0 and isinstance(fid_mean, float)  # numbers stay numbers: sortable on the dashboard

    shown = logged_images(run_dir, run_file)
    assert sorted(shown) == ["report/curves", "report/effects", "report/samples"]
    for name in ("curves", "effects", "samples"):
        (media, caption, _row), = shown[f"report/{name}"]
        assert_same_pixels(media, sweep / f"{name}.png", f"W&B report/{name}")
        assert caption == f"{name}.png"


def _cell_text(cell) -> str:
    """A table cell as report.csv writes it (numbers read back as int or float, empty cells as None)."""
    if cell is None:
        return ""
    return repr(cell) if isinstance(cell, float) else str(cell)


def test_the_report_stays_off_wandb_unless_the_jobs_used_it_or_it_is_asked(tmp_path, capsys):
    from dcgan_lab.report import main as report_main

    csv_only = tmp_path / "csv_sweep" / "2026-01-01" / "12-00-00"
    write_sweep_job(csv_only, 0, "baseline", 30.0, {})
    wandb_jobs = tmp_path / "wandb_sweep" / "2026-01-01" / "12-00-00"
    write_sweep_job(wandb_jobs, 0, "baseline", 30.0, WANDB_JOBS)
    assert report_main([str(csv_only)]) == 0 and report_main([str(wandb_jobs), "--wandb", "off"]) == 0
    assert (csv_only / "report.md").is_file() and (wandb_jobs / "report.md").is_file()
    assert not (csv_only / "wandb").exists() and not (wandb_jobs / "wandb").exists()
    assert "W&B" not in capsys.readouterr().out


# ---- checkpoints as W&B artifacts ----------------------------------------------------------------------
class LogModelOffline(L.Callback):
    """`log_model=all` on the run's W&B logger. Lightning refuses it offline (it cannot upload now), but an offline
    run records the artifacts as an online one would upload them, and `wandb sync` sends them later."""

    def setup(self, trainer, pl_module, stage):
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger._log_model = "all"


def test_wandb_log_model_gets_every_checkpoint_even_those_written_after_its_scan(tmp_path, monkeypatch):
    """Checkpoints are written in a background thread, here held back ~0.3 s each so that none is on disk when
    Lightning's logger scans for it right after the save: every checkpoint file of the run still ends up logged,
    byte for byte (with log_model on, the lab's logger waits for the writes before it scans)."""
    import base64
    import hashlib
    import time

    import dcgan_lab.checkpoint_io as checkpoint_io

    original_save = checkpoint_io.atomic_torch_save
    monkeypatch.setattr(checkpoint_io, "atomic_torch_save", lambda obj, path: (time.sleep(0.3), original_save(obj, path)))
    result = train(compose_config(tmp_path / "run", FAST + [
        "logger=wandb", "trainer.max_epochs=3", "callbacks.model_checkpoint.every_n_epochs=1",
        "+callbacks.log_model._target_=tests.test_dashboards.LogModelOffline"]))
    run_dir = Path(result["output_dir"])
    on_disk = {(p.name, base64.b64encode(hashlib.md5(p.read_bytes()).digest()).decode())
               for p in (run_dir / "checkpoints").glob("*.ckpt")}
    assert {name for name, _ in on_disk} == {"epoch0000.ckpt", "epoch0001.ckpt", "epoch0002.ckpt", "last.ckpt"}
    logged = set(logged_checkpoints(the_offline_run(run_dir)[1]))
    assert on_disk <= logged, sorted(on_disk - logged)


def test_an_offline_log_model_is_refused_without_first_announcing_an_offline_run(tmp_path, monkeypatch, caplog):
    # No credentials and no WANDB_MODE (a user's first run): the refusal is the only thing said, not "logging offline
    # to <run>/wandb; upload later with wandb sync" followed by it.
    from dcgan_lab.errors import ConfigError
    from dcgan_lab.loggers import new_wandb_logger

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr("dcgan_lab.loggers.wandb_has_credentials", lambda: False)
    with pytest.raises(ConfigError, match="log_model=all uploads checkpoints"):
        new_wandb_logger(str(tmp_path / "run"), "dcgan_lab", log_model="all")
    assert "logging offline" not in caplog.text
    new_wandb_logger(str(tmp_path / "run"), "dcgan_lab")  # without log_model: offline, and said once
    assert caplog.text.count("W&B: no credentials, logging offline") == 1
