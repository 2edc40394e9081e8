"""Ctrl-C or SIGTERM mid-epoch, then resume=true: with trainer.deterministic=true the run ends bit-identical to one
never interrupted (the data order of the interrupted epoch travels in the checkpoint with the RNG states); in between,
status.json says `interrupted` and how to continue, and the process exits with 128 + the signal's number.
The same signals before training starts (while the data is decoded): one line, status.json `interrupted`, no traceback."""
import csv
import json
import os
import signal
import subprocess
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from dcgan_lab.data.sources import mnist_mini
from dcgan_lab.pipeline import main, train
from tests.conftest import PYTHON, ROOT

DETERMINISTIC = ["trainer.deterministic=true", "trainer.limit_train_batches=6", "trainer.max_epochs=2",
                 "trainer.log_every_n_steps=1", "callbacks.model_checkpoint.every_n_epochs=1"]


def loss_rows(run: Path) -> list[tuple]:
    with open(run / "metrics.csv") as f:
        return [(r["step"], r["loss/d"], r.get("loss/g", "")) for r in csv.DictReader(f) if r.get("loss/d")]


@pytest.mark.parametrize("signal_name, exit_status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stop_signal_mid_epoch_then_resume_matches_an_uninterrupted_run(make_cfg, tmp_path, signal_name, exit_status):
    """Ctrl-C (SIGINT), or SIGTERM: what SLURM sends on preemption, some 30 s before it kills the job."""
    whole = Path(train(make_cfg(*DETERMINISTIC, run_dir=tmp_path / "whole"))["output_dir"])

    run = tmp_path / "interrupted"
    interrupt = ["+callbacks.interrupt._target_=tests.test_reliability.InterruptAt", "+callbacks.interrupt.at_batch=9",
                 f"+callbacks.interrupt.signal_name={signal_name}"]
    previous_handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as stop:
            main(make_cfg(*DETERMINISTIC, "resume=true", *interrupt, run_dir=run))
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    assert stop.value.code == exit_status  # 128 + the signal's number, as a shell reports it: never 0 ("done")
    status = json.loads((run / "status.json").read_text())
    assert (status["status"], status["signal"], status["g_steps"]) == ("interrupted", signal_name, 10)
    assert status["error"] == (f"interrupted by {signal_name} after G step 10; continue from {run}/checkpoints/last.ckpt "
                               f"with resume=true hydra.run.dir={run}")
    saved = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["batches_seen"]) == (1, 10)  # mid-epoch 1: batch 9 finished, then saved

    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        train(make_cfg(*DETERMINISTIC, "resume=true", run_dir=run))
    # Not Lightning's "Checkpoint directory ... exists and is not empty" (a resume's own folder), nor its "resuming
    # from a checkpoint that ended before the epoch ended ... can cause unreliable results": the ends match below.
    assert [str(w.message) for w in warned] == []
    ends = [torch.load(r / "checkpoints/last.ckpt", weights_only=True)["state_dict"] for r in (whole, run)]
    assert ends[0].keys() == ends[1].keys()
    different = [k for k in ends[0] if not torch.equal(ends[0][k], ends[1][k])]
    assert not different, different[:5]
    assert loss_rows(run) == loss_rows(whole)


# ---- before training starts -------------------------------------------------------------------
def signalled_while_loading(signal_name: str, **kwargs):
    """A data source that gets `signal_name` while it loads, as a large image folder does while it is decoded."""
    os.kill(os.getpid(), getattr(signal, signal_name))
    time.sleep(1)  # the signal's handler runs here
    return mnist_mini(**kwargs)


def unhandled(signum, frame):
    raise AssertionError(f"{signal.Signals(signum).name} reached the handler that was there before the run")


def stop_before_training(signal_name: str) -> list[str]:
    return ["dataset.source._target_=tests.test_interrupt_resume.signalled_while_loading",
            f"+dataset.source.signal_name={signal_name}"]


@pytest.mark.parametrize("signal_name, exit_status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stop_signal_before_training_starts_is_recorded_as_interrupted(make_cfg, tmp_path, caplog, signal_name,
                                                                          exit_status):
    run = tmp_path / "run"
    previous_handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:  # what the process had before: the run hands it back; without the lab's handler, the test fails here
        for signum in previous_handlers:
            signal.signal(signum, unhandled)
        with pytest.raises(SystemExit) as stop:
            main(make_cfg(*stop_before_training(signal_name), run_dir=run))
        assert {s: signal.getsignal(s) for s in previous_handlers} == {s: unhandled for s in previous_handlers}
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    assert stop.value.code == exit_status
    line = (f"interrupted by {signal_name} before training started (while the data was loaded and the run built): "
            "nothing was trained or saved; run the same command again")
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [line]
    status = json.loads((run / "status.json").read_text())
    assert (status["status"], status["signal"], status["error"], status["g_steps"], status["train_time_s"]) == (
        "interrupted", signal_name, line, 0, 0.0)
    assert sorted(p.name for p in run.iterdir()) == ["status.json"]  # no config.yaml, checkpoint or lock


def test_a_run_stopped_before_training_runs_again_with_the_same_command(make_cfg, tmp_path):
    run = tmp_path / "run"
    previous_handler = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, unhandled)
        with pytest.raises(SystemExit):
            main(make_cfg("resume=true", *stop_before_training("SIGTERM"), run_dir=run))
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    main(make_cfg("resume=true", run_dir=run))
    status = json.loads((run / "status.json").read_text())
    assert (status["status"], status["g_steps"]) == ("ok", 4)


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, exit_status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_stop_signal_while_an_image_folder_is_decoded_is_one_line(tmp_path, signal_name, exit_status):
    """Ctrl-C at the terminal, or SLURM's SIGTERM, while `python train.py` decodes a folder of images (minutes for
    CelebA uncached): no traceback, no half-written cache."""
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (192, 192, 3), dtype=np.uint8)
    for i in range(1500):  # about 2 s to decode on a laptop core; written fast (no compression)
        Image.fromarray(np.roll(pixels, i, axis=0)).save(images / f"{i:04d}.png", compress_level=0)
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = ["dataset=image_folder", f"dataset.path={images}", "dataset.image_size=32", f"paths.cache_dir={cache}",
            f"hydra.run.dir={run}", "logger=csv", "metrics=none", "model.ngf=8", "model.ndf=8"]
    process = subprocess.Popen([PYTHON, str(ROOT / "train.py"), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if "decoding 1500 image files" in line:
            process.send_signal(getattr(signal, signal_name))
            break
    out, err = process.communicate(timeout=120)
    assert process.returncode == exit_status, err
    assert "Traceback" not in out + err
    line = (f"interrupted by {signal_name} before training started (while the data was loaded and the run built): "
            "nothing was trained or saved; run the same command again")
    assert out.strip().endswith(line)
    assert (run / "train.log").read_text().strip().endswith(line)
    status = json.loads((run / "status.json").read_text())
    assert (status["status"], status["signal"], status["error"]) == ("interrupted", signal_name, line)
    assert not (cache / "images").exists() or not any((cache / "images").iterdir())


# ---- after the last batch -----------------------------------------------------------------------
class SignalAtTheLastEpochsEnd(L.Callback):
    """SIGTERM while the last epoch's end-work runs (final metrics, grids): a SLURM time limit hit just then."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 == trainer.max_epochs:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the signal's handler runs here


def test_resume_of_a_run_stopped_in_its_end_of_training_work_finishes_it_as_if_never_stopped(make_cfg, tmp_path, capsys,
                                                                                                 caplog):
    """SIGTERM (a SLURM time limit) while the last epoch's end-work runs: all is trained, but the end of the fit
    (last.png, interpolation.png, progress.gif, status.json's final metrics) never happened. resume=true finishes
    it without training a step: the same pictures and numbers as a run that was never stopped."""
    args = (*DETERMINISTIC, "trainer.limit_train_batches=3", "metrics.enabled=[clustering]", "metrics.at_end=true",
            "metrics.kmeans_k=2", "metrics.n_samples=32")
    whole = tmp_path / "whole"
    main(make_cfg(*args, run_dir=whole))
    run = tmp_path / "run"
    previous_handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stop:
            main(make_cfg(*args, "+callbacks.term._target_=tests.test_interrupt_resume.SignalAtTheLastEpochsEnd",
                          run_dir=run))
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    assert stop.value.code == 143
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    assert not (run / "samples/interpolation.png").exists() and not (run / "samples/progress.gif").exists()
    weights = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["state_dict"]
    capsys.readouterr()

    with caplog.at_level("INFO", logger="dcgan_lab.pipeline"):
        main(make_cfg(*args, "resume=true", run_dir=run))
    out = "\n".join(r.getMessage() for r in caplog.records if r.name == "dcgan_lab.pipeline")
    last = run / "checkpoints/last.ckpt"
    assert (f"checkpoint {last} has already trained 2 epochs, all that trainer.max_epochs=2 asks for: the run was "
            "interrupted by SIGTERM in its end-of-training work; nothing is left to train, so this only finishes that "
            "work (final metrics, samples/last.png, interpolation.png, progress.gif)") in out
    status, uninterrupted = (json.loads((folder / "status.json").read_text()) for folder in (run, whole))
    assert status["status"] == "ok" and status["g_steps"] == uninterrupted["g_steps"] == 6
    timing = ("train_time_s", "perf/", "metrics/eval_time_s")  # clocks differ; every other final number is the uninterrupted run's
    numbers = {k: v for k, v in status["final_metrics"].items() if not k.startswith(timing)}
    expected = {k: v for k, v in uninterrupted["final_metrics"].items() if not k.startswith(timing)}
    assert set(numbers) == set(expected) and "cluster/silhouette" in numbers and "loss/d" in numbers, (numbers, expected)
    assert numbers == pytest.approx(expected, rel=1e-5)
    for picture in ("last.png", "interpolation.png"):
        assert np.array_equal(np.asarray(Image.open(run / "samples" / picture)),
                              np.asarray(Image.open(whole / "samples" / picture))), picture
    assert Image.open(run / "samples/progress.gif").n_frames == Image.open(whole / "samples/progress.gif").n_frames == 2
    after = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.equal(after[k], weights[k]) for k in weights)  # not a step trained
    # Now it is finished like any other run: another resume leaves its record alone.
    with pytest.raises(SystemExit) as refused:
        main(make_cfg(*args, "resume=true", run_dir=run))
    assert refused.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: checkpoint {last} has already trained 2 epochs, all that "
                                              "trainer.max_epochs=2 asks for: nothing to resume")
    assert json.loads((run / "status.json").read_text())["final_metrics"] == status["final_metrics"]
