"""Faults: resume after a kill, atomic checkpoints, divergence, Ctrl-C, out-of-disk, run folders."""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from dcgan_lab.callbacks.guard import DivergenceError
from dcgan_lab.callbacks.host_read import HostRead
from dcgan_lab.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError, wait_for_checkpoint_writes
from dcgan_lab.errors import ConfigError
from dcgan_lab.pipeline import main, train
from dcgan_lab.run_folder import rows_before_checkpoint, unique_dir
from tests.conftest import FAST, PYTHON, ROOT, compose_config

# Two batches an epoch, a checkpoint every epoch, bitwise-reproducible kernels.
EVERY_EPOCH = ("trainer.deterministic=true", "trainer.limit_train_batches=2", "callbacks.model_checkpoint.every_n_epochs=1")


def network_state(ckpt: Path, prefix: str) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def digest(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class PoisonWeights(L.Callback):
    """Fault injection: a NaN lands in one weight of `network` before batch `at_batch` (an overflow, a bit flip)."""

    def __init__(self, network: str, at_batch: int):
        self.network, self.at_batch, self.done = network, at_batch, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.batches_seen == self.at_batch and not self.done:
            with torch.no_grad():
                weight = next(getattr(pl_module, self.network).parameters())
                weight[(0,) * weight.dim()] = float("nan")  # in place, whatever the memory layout
            self.done = True


def poison(network: str, at_batch: int) -> list[str]:
    key = "+callbacks.poison"
    return [f"{key}._target_=tests.test_reliability.PoisonWeights", f"{key}.network={network}", f"{key}.at_batch={at_batch}"]


class InterruptAt(L.Callback):
    """Ctrl-C for real: sends SIGINT (or `signal_name`, e.g. SIGTERM: a scheduler's stop) to this process before
    batch `at_batch`."""

    def __init__(self, at_batch: int, signal_name: str = "SIGINT", again_after_s: float | None = None):
        self.at_batch, self.signum, self.again_after_s = at_batch, getattr(signal, signal_name), again_after_s

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.batches_seen == self.at_batch:
            os.kill(os.getpid(), self.signum)
            if self.again_after_s is not None:  # the signal once more: a second Ctrl-C, or a sweep passing it on
                time.sleep(self.again_after_s)
                os.kill(os.getpid(), self.signum)
            time.sleep(1)  # the signal's handler runs here


# ---- resume ----------------------------------------------------------------------------------
# Metrics as a user gets them (default metrics, every epoch here), small enough for seconds per evaluation;
# throughput from the first batch, so it is logged at every epoch's end.
WITH_METRICS = ("metrics=default", "metrics.every_n_epochs=1", "metrics.n_samples=100", "metrics.figures=false",
                "trainer.log_every_n_steps=1", "callbacks.throughput.warmup=0")
TIMINGS = ("metrics/eval_time_s", "perf/images_per_s", "perf/wall_images_per_s", "train_time_s")  # wall-clock values: only where they are logged can match


def csv_rows(run: Path) -> list[dict]:
    """metrics.csv as a user reads it: each row's filled cells, timings by presence only."""
    with open(run / "metrics.csv") as f:
        return [{k: ("<time>" if k in TIMINGS else v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """2 epochs of 2 batches with metrics, a checkpoint every epoch: what the resumed runs must reproduce."""
    run = tmp_path_factory.mktemp("resume") / "whole"
    train(compose_config(run, [*FAST, *EVERY_EPOCH, *WITH_METRICS, "trainer.max_epochs=2"]))
    return run


def test_resumed_run_ends_with_the_weights_and_metrics_rows_of_an_uninterrupted_run(make_cfg, tmp_path, uninterrupted):
    # The user's case: train, stop, then resume=true with more epochs. Evaluation rows are logged at the step of the
    # epoch's last losses (its last batch), throughput rows at trainer.global_step (2 optimizer steps per batch):
    # both must survive.
    run = tmp_path / "split"
    train(make_cfg(*EVERY_EPOCH, *WITH_METRICS, "trainer.max_epochs=1", run_dir=run))
    resumed = train(make_cfg(*EVERY_EPOCH, *WITH_METRICS, "trainer.max_epochs=2", "resume=true", run_dir=run))

    assert resumed["g_steps"] == 4
    for prefix in ("generator.", "discriminator."):
        torch.testing.assert_close(network_state(run / "checkpoints/last.ckpt", prefix),
                                   network_state(uninterrupted / "checkpoints/last.ckpt", prefix), rtol=0, atol=0)
    expected = csv_rows(uninterrupted)
    assert [(row["step"], row["epoch"]) for row in expected if "classifier/fid" in row] == [("1", "0.0"), ("3", "1.0")]
    assert [row["g_step"] for row in expected if "loss/g" in row] == ["1.0", "2.0", "3.0", "4.0"]
    rows = csv_rows(run)
    assert [row for row in rows if "classifier/fid" in row] == [row for row in expected if "classifier/fid" in row]
    # Throughput once per trained epoch: the first part's end of training added no throughput row, only its wall
    # rate with the end work counted (each part's clock starts at its own start), at the step it stopped at.
    assert [row["step"] for row in rows if "perf/images_per_s" in row] == ["4", "8"]  # optimizer steps
    run_ends = {"perf/wall_images_per_s": "<time>", "step": "4"}
    assert [row for row in rows if row == run_ends] == [run_ends]
    assert [row for row in rows if row != run_ends] == expected  # same columns, steps and values, row by row
    # The run's seconds of training at each epoch's end go on across the resume (report --seconds reads them), and
    # the last is below status.json's total, which adds the end work.
    with open(run / "metrics.csv") as f:
        times = [(row["epoch"], float(row["train_time_s"])) for row in csv.DictReader(f) if row["train_time_s"]]
    assert [epoch for epoch, _ in times] == ["0", "1"] and 0 < times[0][1] < times[1][1] < resumed["metrics"]["train_time_s"]


def test_resume_from_an_earlier_checkpoint_drops_the_rows_logged_after_it(make_cfg, tmp_path, uninterrupted):
    # What a kill leaves: metrics.csv holds rows logged after the checkpoint it resumes from (training, learning
    # rate, evaluation and throughput rows of epoch 1). They go, and the resumed run logs them again.
    killed = tmp_path / "killed"
    shutil.copytree(uninterrupted, killed)
    train(make_cfg(*EVERY_EPOCH, *WITH_METRICS, "trainer.max_epochs=2", f"ckpt_path={killed / 'checkpoints/epoch0000.ckpt'}",
                   run_dir=killed))
    assert csv_rows(killed) == csv_rows(uninterrupted)


def checkpoint_counters(batches_seen: int, lightning_batches: int, epochs_finished: int, global_step: int) -> dict:
    """The counters rows_before_checkpoint reads, as GANModule and Lightning store them in a checkpoint."""
    return {"batches_seen": batches_seen, "global_step": global_step, "loops": {"fit_loop": {
        "epoch_loop.state_dict": {"_batches_that_stepped": lightning_batches},
        "epoch_progress": {"current": {"processed": epochs_finished}}}}}


def test_rows_before_an_epoch_end_and_a_batch_end_checkpoint():
    # 2 batches an epoch, n_critic=1 (2 optimizer steps a batch), rows in the order an uninterrupted run logs them:
    # each batch's losses and learning rates, then at the epoch's end its evaluation (at the step of its last
    # losses) and throughput (at the optimizer step).
    def rows_of(batch):
        losses = {"step": str(batch), "g_step": str(batch + 1), "loss/d": "1", "lr/d": "2e-4"}
        end = [{"step": str(batch), "epoch": str(batch // 2), "fid": "9"},
               {"step": str(2 * (batch + 1)), "perf/images_per_s": "50"}] if batch % 2 else []
        return [losses, *end]

    rows = [row for batch in range(4) for row in rows_of(batch)]
    # Epoch-end checkpoint after epoch 0: Lightning has counted both batches.
    at_epoch_end = checkpoint_counters(batches_seen=2, lightning_batches=2, epochs_finished=1, global_step=4)
    assert rows_before_checkpoint(rows, at_epoch_end) == rows_of(0) + rows_of(1)
    # Ctrl-C's checkpoint at the end of batch 2 (SaveOnInterrupt, on_train_batch_end): Lightning counts that batch
    # only after the hook (and adds it on restart), GANModule's batches_seen already holds it. Its rows stay.
    at_batch_end = checkpoint_counters(batches_seen=3, lightning_batches=2, epochs_finished=1, global_step=6)
    assert rows_before_checkpoint(rows, at_batch_end) == rows_of(0) + rows_of(1) + rows_of(2)


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> tuple[Path, Path]:
    """(uninterrupted run, run SIGKILLed mid-epoch 2 and resumed in place), 4 epochs of 30 batches with metrics."""
    tmp_path = tmp_path_factory.mktemp("sigkill")
    args = ["logger=csv", "model.ngf=8", "model.ndf=8", "dataset.batch_size=16", "callbacks.progress_bar=null",
            "trainer.deterministic=true", "trainer.limit_train_batches=30", "trainer.max_epochs=4",
            "callbacks.model_checkpoint.every_n_epochs=1", "trainer.enable_model_summary=false", *WITH_METRICS,
            f"paths.cache_dir={ROOT / '.cache'}"]  # the metrics classifier the in-process tests use
    env = {**os.environ, "WANDB_MODE": "offline"}

    def cli(run: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([PYTHON, str(ROOT / "train.py"), *args, f"hydra.run.dir={run}", *extra],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    whole = cli(tmp_path / "whole")
    assert whole.wait(timeout=600) == 0, whole.stderr.read()

    killed = tmp_path / "killed"
    proc = cli(killed)
    last = killed / "checkpoints/last.ckpt"

    def last_epoch() -> int:  # safe to read while the run replaces it: writes are atomic
        return torch.load(last, weights_only=True)["epoch"] if last.exists() else -1

    while last_epoch() < 1:  # kill once last.ckpt holds epoch 1: training is mid-epoch 2 (of 0..3)
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert last_epoch() in (1, 2)

    resumed = cli(killed, "resume=true")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    return tmp_path / "whole", killed


@pytest.mark.slow
def test_sigkill_then_resume_in_the_same_folder_matches_an_uninterrupted_run(killed_and_resumed):
    whole, killed = killed_and_resumed
    for prefix in ("generator.", "discriminator."):
        torch.testing.assert_close(network_state(killed / "checkpoints/last.ckpt", prefix),
                                   network_state(whole / "checkpoints/last.ckpt", prefix), rtol=0, atol=0)


@pytest.mark.slow
def test_sigkill_then_resume_keeps_every_metrics_row_of_an_uninterrupted_run(killed_and_resumed):
    whole, killed = killed_and_resumed
    # Rows the killed run wrote after its checkpoint are dropped and logged again: the file is the same.
    assert csv_rows(killed) == csv_rows(whole)


@pytest.mark.slow
def test_sigkill_while_last_ckpt_is_written_never_leaves_a_corrupt_one(tmp_path):
    # A DCGAN of width 32 (5 MB checkpoints take a while to write and fsync) saving after every 1-batch epoch. Each
    # run writes one whole last.ckpt, then is killed the moment the next one's temp file appears: mid-write.
    args = ["logger=csv", "model.ngf=32", "model.ndf=32", "dataset.batch_size=16", "callbacks.progress_bar=null",
            "metrics=none", "trainer.limit_train_batches=1", "trainer.max_epochs=1000",
            "callbacks.model_checkpoint.every_n_epochs=1", "callbacks.sample_grid.every_n_epochs=1000",
            "trainer.enable_model_summary=false"]
    run = tmp_path / "run"
    last = run / "checkpoints/last.ckpt"
    epochs, killed_mid_write = [-1], 0
    for attempt in range(4):
        written_before = last.stat().st_mtime_ns if last.exists() else None
        proc = subprocess.Popen([PYTHON, str(ROOT / "train.py"), *args, f"hydra.run.dir={run}", "resume=true"],
                                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        temp_files = f".last.{proc.pid}.tmp*"
        deadline = time.monotonic() + 300
        while not last.exists() or last.stat().st_mtime_ns == written_before:  # one whole checkpoint from this run
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.01)
        settled = last.stat().st_mtime_ns
        # Kill as soon as the next write shows: its temp file, or (were writes not atomic) last.ckpt itself changing.
        while not list(last.parent.glob(temp_files)) and last.stat().st_mtime_ns == settled:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        killed_mid_write += bool(list(last.parent.glob(temp_files)))  # never renamed: the kill landed mid-write
        checkpoint = torch.load(last, weights_only=True)  # loads: the last whole file
        assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
        epochs.append(checkpoint["epoch"])
    assert killed_mid_write >= 2, f"only {killed_mid_write} of 4 kills landed while last.ckpt was written"
    assert epochs == sorted(set(epochs)), epochs  # each run went on from the checkpoint the one before left


# ---- atomic writes and out-of-disk -------------------------------------------------------------
def _fill(n_bytes: int) -> dict:
    return {"state_dict": {"w": torch.ones(n_bytes // 4)}}


def test_checkpoint_write_that_hits_the_file_size_limit_keeps_the_previous_file(tmp_path):
    io_plugin, path = AtomicCheckpointIO(), tmp_path / "checkpoints/last.ckpt"
    io_plugin.save_checkpoint(_fill(20_000), path)
    io_plugin.wait()
    before = digest(path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills us at the limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(CheckpointWriteError, match=r"no room to write checkpoint .*last\.ckpt .*File too large.*previous last\.ckpt is intact"):
            io_plugin.save_checkpoint(_fill(1_000_000), path)
            io_plugin.wait()  # the write runs in the background: its error comes with the wait
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert digest(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp file left behind


def test_disk_full_during_checkpoint_keeps_the_previous_file(tmp_path):
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("needs root to mount a 1 MB tmpfs")
    try:
        io_plugin, path = AtomicCheckpointIO(), mount / "last.ckpt"
        io_plugin.save_checkpoint(_fill(300_000), path)
        io_plugin.wait()
        before = digest(path)
        with pytest.raises(CheckpointWriteError, match="No space left on device.*previous last.ckpt is intact"):
            io_plugin.save_checkpoint(_fill(900_000), path)
            io_plugin.wait()
        assert digest(path) == before
        assert [p.name for p in mount.iterdir()] == ["last.ckpt"]
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_a_background_checkpoint_holds_the_values_it_was_asked_for_off_the_training_thread(tmp_path, monkeypatch, device):
    """The writer thread is held until the training thread has changed the weights in place: the file still has the
    values of when save_checkpoint was called, and it was written by the writer thread, not the caller. On a GPU
    the snapshot is an asynchronous copy into pinned host memory, queued before the weights change."""
    import threading

    import dcgan_lab.checkpoint_io as checkpoint_io

    release, writers = threading.Event(), []

    def held_save(obj, path):
        release.wait(timeout=30)
        writers.append(threading.current_thread().name)
        original_save(obj, path)

    original_save = checkpoint_io.atomic_torch_save
    monkeypatch.setattr(checkpoint_io, "atomic_torch_save", held_save)
    io_plugin, path = AtomicCheckpointIO(), tmp_path / "checkpoints/last.ckpt"
    weights = torch.zeros(1000, device=device)
    if device == "cuda":
        torch.cuda._sleep(2_000_000_000)  # the GPU is busy with queued steps (a second or so)
    io_plugin.save_checkpoint({"state_dict": {"w": weights}, "epoch": 0}, path)  # returns before the write
    if device == "cuda":
        assert not torch.cuda.current_stream().query()  # ...and the save did not wait for them
    assert not path.exists()
    weights.add_(1)  # the next optimizer step
    release.set()
    io_plugin.wait()
    assert writers and writers[0].startswith("checkpoint-writer")
    assert torch.equal(torch.load(path, map_location="cpu", weights_only=True)["state_dict"]["w"], torch.zeros(1000))


class FileSizeLimitFrom(L.Callback):
    """Out-of-disk for real, from epoch `epoch` on: files may not grow past `max_bytes` (ulimit -f)."""

    def __init__(self, epoch: int, max_bytes: int):
        self.epoch, self.max_bytes, self.saved = epoch, max_bytes, None

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            wait_for_checkpoint_writes(trainer)  # the disk fills after the epoch before's checkpoints are written
            self.saved = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.max_bytes, self.saved[0][1]))

    def on_exception(self, trainer, pl_module, exception):
        self.on_fit_end(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module):
        if self.saved is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, self.saved[0])
            signal.signal(signal.SIGXFSZ, self.saved[1])


def test_training_run_that_cannot_write_its_checkpoint_stops_with_one_line(make_cfg, tmp_path):
    run = tmp_path / "run"
    limit = "+callbacks.disk_full"
    cfg = make_cfg(*EVERY_EPOCH, "trainer.max_epochs=2", f"{limit}._target_=tests.test_reliability.FileSizeLimitFrom",
                   f"{limit}.epoch=1", f"{limit}.max_bytes=60000", run_dir=run)  # metrics and grids fit, a checkpoint does not
    try:
        with pytest.raises(CheckpointWriteError) as failure:
            train(cfg)
    finally:
        assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY
    assert str(failure.value) == (
        f"no room to write checkpoint {run / 'checkpoints/epoch0001.ckpt'} (0.9 MB: File too large); epoch0001.ckpt was "
        "not written and the previous last.ckpt is intact. Free disk space (or point hydra.run.dir at a larger disk) "
        "and resume with resume=true"
    )
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["epoch"] == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch0000.ckpt", "last.ckpt"]


class RecordBatches(L.Callback):
    done: list = []

    def on_train_start(self, trainer, pl_module):
        RecordBatches.done = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        RecordBatches.done.append((trainer.current_epoch, batch_idx))


def test_a_checkpoint_that_fails_in_the_background_stops_the_run_at_the_next_batch(make_cfg, tmp_path):
    """Checkpoints are written in a background thread: a failed write still stops the run within a batch or two of
    the failure (not at the next save, an epoch later), with the failed file's one line, and no later file lands."""
    run = tmp_path / "run"
    limit = "+callbacks.disk_full"
    cfg = make_cfg("trainer.deterministic=true", "trainer.limit_train_batches=8", "trainer.max_epochs=8",
                   "callbacks.model_checkpoint.every_n_epochs=4",
                   f"{limit}._target_=tests.test_reliability.FileSizeLimitFrom", f"{limit}.epoch=3",
                   f"{limit}.max_bytes=300000",  # a sample grid fits, a 0.9 MB checkpoint does not
                   "+callbacks.batches._target_=tests.test_reliability.RecordBatches", run_dir=run)
    with pytest.raises(CheckpointWriteError, match=r"no room to write checkpoint .*epoch0003\.ckpt .*; "
                                                   r"epoch0003\.ckpt was not written and the previous last\.ckpt is intact"):
        train(cfg)
    # Epoch 3's saves failed; the next would be last.ckpt at the end of epoch 4. The run stopped at a batch start
    # soon after the writer failed (epoch 4's first, unless the write took several tiny batches to fail).
    assert (3, 7) <= max(RecordBatches.done) < (4, 7)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]  # no partial file either
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2  # epoch 2's, whole


# ---- divergence --------------------------------------------------------------------------------
def test_nan_stops_training_naming_network_and_step_and_keeps_last_good_files(make_cfg, tmp_path):
    run = tmp_path / "run"
    cfg = make_cfg(*EVERY_EPOCH, "trainer.max_epochs=3", *poison("discriminator", at_batch=3), run_dir=run)
    with pytest.raises(DivergenceError) as failure:
        train(cfg)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("divergence: discriminator weights became NaN/Inf (discriminator.")
    assert "at G step 3 (epoch 1, batch 3)" in message
    assert f"last good checkpoint: {run / 'checkpoints/last.ckpt'}" in message
    last = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert (run / "samples/epoch_0000.png").is_file()
    assert not (run / "samples/last.png").exists()  # no grid from a NaN generator


class LateRead(HostRead):
    """A verdict that lands `delay` looks after it was started, as on a GPU running batches behind the host
    (None: not before something waits for it)."""

    delay: int | None = 3
    started_at: list = []

    def __init__(self, tensor):
        super().__init__(tensor)
        self.looks = 0

    def ready(self) -> bool:
        self.looks += 1
        return LateRead.delay is not None and self.looks > LateRead.delay


class BatchEnds(L.Callback):
    seen: list = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        BatchEnds.seen.append(pl_module.batches_seen)


@pytest.mark.parametrize("delay", [3, None], ids=["lands_mid_epoch", "lands_after_the_epoch"])
def test_a_verdict_that_lands_late_still_names_the_first_bad_step_and_saves_nothing_bad(make_cfg, tmp_path,
                                                                                         monkeypatch, delay):
    """The guard's reads do not wait for the GPU: the verdict is acted on when it lands. The NaN at batch 2 is
    still named there, mid-epoch the run stops a few batches later, and a verdict still on its way at the
    epoch's end is waited for before the sample grid and the checkpoint."""
    import dcgan_lab.callbacks.guard as guard

    monkeypatch.setattr(guard, "HostRead", LateRead)
    LateRead.delay, BatchEnds.seen = delay, []
    run = tmp_path / "run"
    cfg = make_cfg("trainer.limit_train_batches=10", "trainer.max_epochs=1", "callbacks.divergence_guard.every_n_batches=1",
                   "callbacks.model_checkpoint.every_n_epochs=1", *poison("discriminator", at_batch=2),
                   "+callbacks.batch_ends._target_=tests.test_reliability.BatchEnds", run_dir=run)
    with pytest.raises(DivergenceError, match=r"discriminator weights became NaN/Inf .* at G step 2 \(epoch 0, batch 2\)"):
        train(cfg)
    if delay is None:  # every batch ran; the epoch-end check stopped it
        assert BatchEnds.seen[-1] == 10
    else:  # an immediate read would have stopped it at the end of batch 2 (batches_seen 3)
        assert 3 < BatchEnds.seen[-1] < 10
    assert not (run / "samples/epoch_0000.png").exists()
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").glob("*.ckpt"))


def test_real_divergence_from_a_huge_learning_rate_stops_before_a_bad_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg("optimizer=sgd", "optimizer.lr_d=1e30", "optimizer.lr_g=1e30", "trainer.max_epochs=2")
    with pytest.raises(DivergenceError, match=r"^divergence: (generator|discriminator) .*NaN/Inf.* at G step \d+ .*no checkpoint was written yet"):
        train(cfg)
    assert not (tmp_path / "run/checkpoints").exists()


def test_rollback_reloads_last_good_checkpoint_with_lower_learning_rate(make_cfg, tmp_path, caplog):
    run = tmp_path / "run"
    # With a best.ckpt beside it (epoch 0's, from a made-up score): the rollback still takes the last checkpoint.
    cfg = make_cfg(*SCORED, "trainer.max_epochs=3", "callbacks.divergence_guard.action=rollback",
                   *poison("generator", at_batch=3), run_dir=run)
    with caplog.at_level(logging.WARNING, logger="dcgan_lab.callbacks.guard"):
        result = train(cfg)
    rolled = [r.getMessage() for r in caplog.records if r.name == "dcgan_lab.callbacks.guard" and "rolled back" in r.getMessage()]
    assert len(rolled) == 1
    assert rolled[0].startswith("divergence: generator weights became NaN/Inf (generator.")
    assert f"at G step 3 (epoch 1, batch 3); rolled back to {run / 'checkpoints/last.ckpt'} with learning rates x0.5" in rolled[0]
    assert result["g_steps"] == 6
    last = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert [g["lr"] for s in last["optimizer_states"] for g in s["param_groups"]] == [pytest.approx(1e-4)] * 2
    assert last["callbacks"]["DivergenceGuard"] == {
        "lr_scale": 0.5, "rollbacks": 1,
        "history": [{"diverged_at_g_step": 3, "at_g_step": 4, "to": str(run / "checkpoints/last.ckpt"), "to_g_step": 2}]}
    assert [r["diverged_at_g_step"] for r in result["rollbacks"]] == [3]


def test_a_rollback_at_the_last_epochs_end_leaves_no_nan_in_the_final_numbers(make_cfg, tmp_path, caplog):
    """The NaN at G step 3 is seen at the last epoch's end: the weights go back to epoch 0's last.ckpt and the run
    ends. Its final numbers are none of the discarded steps' (NaN or not), and status.json, the end line and the
    epoch's console line say it rolled back."""
    run = tmp_path / "run"
    cfg = make_cfg(*EVERY_EPOCH, "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
                   "callbacks.divergence_guard.action=rollback", *poison("generator", at_batch=3),
                   "+callbacks.lines._target_=dcgan_lab.callbacks.progress.EpochLines", "logger=wandb", run_dir=run)
    with caplog.at_level(logging.INFO):
        main(cfg)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "ok"
    assert status["rollbacks"] == [{"diverged_at_g_step": 3, "at_g_step": 4, "to": str(run / "checkpoints/last.ckpt"),
                                    "to_g_step": 2}]
    final = status["final_metrics"]
    assert all(math.isfinite(v) for v in final.values()), final
    # None of the discarded steps' numbers (the finite D outputs and gradient norms beside the NaN losses either),
    # and the learning rates the weights kept will train on: the cut ones.
    assert not {"loss/d", "loss/g", "D(x)", "D(G(z))", "grad_norm/d", "grad_norm/g"} & set(final), final
    assert (final["lr/d"], final["lr/g"]) == (pytest.approx(1e-4), pytest.approx(1e-4))
    assert [r.getMessage() for r in caplog.records if r.name == "dcgan_lab.pipeline" and r.levelno == logging.WARNING] == [
        f"rolled back 1 time(s) (divergence at G step 3), last to {run / 'checkpoints/last.ckpt'} (G step 2), learning "
        "rates now x0.5; the run ended there: its final weights are those of G step 2, and the discarded steps' losses "
        "and D outputs are left out of its final metrics"]
    epoch_lines = [r.getMessage() for r in caplog.records if r.name == "dcgan_lab.callbacks.progress" and " done (" in r.getMessage()]
    assert epoch_lines[0].startswith("epoch 0 done (1 of 2), G step 2: loss/d=")
    assert epoch_lines[1].startswith("epoch 1 done (2 of 2), G step 4: no losses: a rollback discarded its steps"), epoch_lines
    # The W&B run's summary says so too (its runs table sorts and filters by it).
    from tests.wandb_records import offline_run, the_offline_run

    summary = offline_run(the_offline_run(run)[1])["summary"]
    assert (json.loads(summary["rollbacks"]), json.loads(summary["rollbacks_diverged_at_g_step"])) == (1, [3])


# ---- Ctrl-C --------------------------------------------------------------------------------------
def test_ctrl_c_saves_a_checkpoint_that_resume_continues(make_cfg, tmp_path):
    run = tmp_path / "run"  # resume=true with no checkpoint yet starts from scratch
    cfg = make_cfg("resume=true", "trainer.limit_train_batches=6", "+callbacks.interrupt._target_=tests.test_reliability.InterruptAt",
                   "+callbacks.interrupt.at_batch=3", run_dir=run)
    previous_handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning exits after its graceful shutdown
            train(cfg)
    finally:
        signal.signal(signal.SIGINT, previous_handler)  # Lightning leaves SIGINT ignored
    saved = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert saved["batches_seen"] == 4  # Ctrl-C before batch 3: that batch finishes, then last.ckpt is saved
    result = train(make_cfg("trainer.limit_train_batches=6", "resume=true", run_dir=run))
    assert result["g_steps"] == 6



@pytest.mark.parametrize("again_after_s, saved", [(0.0, True), (1.2, False)], ids=["same_stop", "stop_at_once"])
def test_a_repeated_signal_within_a_second_is_the_same_stop_and_a_later_one_stops_at_once(make_cfg, tmp_path,
                                                                                         again_after_s, saved):
    """A parallel sweep passes the signal on to its jobs, which a terminal's Ctrl-C has reached too: a job gets it
    twice within milliseconds and must still finish its batch and save. A second Ctrl-C later means "at once"."""
    run = tmp_path / "run"
    cfg = make_cfg("trainer.limit_train_batches=6", "+callbacks.interrupt._target_=tests.test_reliability.InterruptAt",
                   "+callbacks.interrupt.at_batch=3", f"+callbacks.interrupt.again_after_s={again_after_s}", run_dir=run)
    previous_handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises((SystemExit, KeyboardInterrupt)):
            train(cfg)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    assert (run / "checkpoints/last.ckpt").is_file() == saved
    if saved:
        assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["batches_seen"] == 4

# ---- run folders -------------------------------------------------------------------------------
def test_a_new_run_never_writes_into_another_runs_folder(make_cfg, tmp_path):
    run = tmp_path / "run"
    train(make_cfg(run_dir=run))
    before = {p: digest(p) for p in run.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match=r"already holds a run; a new run never writes into it\. Continue that run with resume=true"):
        train(make_cfg(run_dir=run))
    assert {p: digest(p) for p in run.rglob("*") if p.is_file()} == before


def test_a_second_run_in_a_folder_a_run_is_writing_into_is_one_line(make_cfg, tmp_path, capsys):
    """The same resume=true command started twice (a job resubmitted while the first still runs): the second used
    to train beside the first in the folder, both writing last.ckpt, grids and status.json, and metrics.csv lost
    rows (G step 150 of 210 was missing). Two fresh runs given one hydra.run.dir raced the same way."""
    import fcntl

    from dcgan_lab.pipeline import main

    run = tmp_path / "run"
    main(make_cfg("resume=true", run_dir=run))
    assert not (run / ".lock").exists()  # released and removed when the run ended
    before = {p: digest(p) for p in run.rglob("*") if p.is_file()}
    for command in (["resume=true", "trainer.max_epochs=2"], []):
        with open(run / ".lock", "a+") as first:  # the first run, still training (as another process holds it)
            fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
            first.write("pid 4242 on node7\n")
            first.flush()
            with pytest.raises(SystemExit) as exit_info:
                main(make_cfg(*command, run_dir=run))
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.splitlines() == [
            f"error: {run} is being written by another run right now (pid 4242 on node7): two runs in one folder would "
            "mix their files. Let that one finish, or stop it (Ctrl-C saves a checkpoint) and then resume=true"]
        (run / ".lock").unlink()  # as the first run does when it ends
        assert {p: digest(p) for p in run.rglob("*") if p.is_file()} == before
    assert main(make_cfg("resume=true", "trainer.max_epochs=2", run_dir=run))["g_steps"] == 8  # once it has ended


def test_two_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    taken = tmp_path / "outputs/2024-01-01/12-00-00"
    taken.mkdir(parents=True)
    first = unique_dir(str(taken))
    assert first == f"{taken}_1"
    assert unique_dir(str(taken)) == first  # stable when Hydra resolves it again after creating it
    assert unique_dir(str(tmp_path / "fresh")) == str(tmp_path / "fresh")


# ---- last.ckpt ---------------------------------------------------------------------------------
def test_last_checkpoint_is_the_state_at_the_last_epoch_end(make_cfg, tmp_path):
    """Numbered checkpoints every 2 epochs, 3 epochs: last.ckpt is epoch 2's end (Lightning 2.6 alone writes
    last.ckpt only beside a numbered one: epoch 1's here), and resume=true goes on from there."""
    run, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
    every_two = (*EVERY_EPOCH, "callbacks.model_checkpoint.every_n_epochs=2")
    result = train(make_cfg(*every_two, "trainer.max_epochs=3", run_dir=run))
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch0001.ckpt", "last.ckpt"]
    last, numbered = (torch.load(checkpoints / name, weights_only=True) for name in ("last.ckpt", "epoch0001.ckpt"))
    assert (last["epoch"], last["batches_seen"], numbered["batches_seen"]) == (2, 6, 4)
    assert result["g_steps"] == 6
    grids = sorted(p.name for p in (run / "samples").glob("epoch_*.png"))
    train(make_cfg(*every_two, "trainer.max_epochs=4", "resume=true", run_dir=run))
    assert sorted(p.name for p in (run / "samples").glob("epoch_*.png")) == [*grids, "epoch_0003.png"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["batches_seen"] == 8  # one epoch more, not two


def test_last_checkpoint_after_a_stop_mid_epoch(make_cfg, tmp_path):
    # trainer.max_steps=5 G steps with 2 batches an epoch: training ends in the middle of epoch 2, after epoch 1's
    # numbered checkpoint.
    run = tmp_path / "run"
    train(make_cfg(*EVERY_EPOCH, "callbacks.model_checkpoint.every_n_epochs=2", "trainer.max_epochs=5",
                   "trainer.max_steps=5", run_dir=run))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch0001.ckpt", "last.ckpt"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["batches_seen"] == 5


# ---- best.ckpt ---------------------------------------------------------------------------------
class ScoreByEpoch(L.Callback):
    """A made-up evaluation with known scores per epoch, set where the lab's metrics set theirs (before the
    checkpoint callbacks, which Lightning runs last)."""

    scores = (3.0, 2.0, 1.0, 1.5, 4.0)

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.callback_metrics["test/score"] = torch.tensor(self.scores[trainer.current_epoch])


SCORED = ("callbacks.best_checkpoint.monitor=test/score", "+callbacks.score._target_=tests.test_reliability.ScoreByEpoch",
          *EVERY_EPOCH)


def same_generator(a: Path, b: Path) -> bool:
    first, second = network_state(a, "generator."), network_state(b, "generator.")
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("mode, first_best, then_best", [("min", 2, 2), ("max", 0, 4)])
def test_best_checkpoint_holds_the_state_of_the_best_evaluation(make_cfg, tmp_path, mode, first_best, then_best):
    """Scores 3, 2, 1 over a first part of 3 epochs, then 1.5, 4 over a resumed part. min: the best (1) comes in
    the first part's last epoch, and the resumed part's 1.5 must not replace it: last.ckpt has to hold the score
    as updated in that same epoch. max: 3, then 4 in the resumed part."""
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    train(make_cfg(*SCORED, f"callbacks.best_checkpoint.mode={mode}", "trainer.max_epochs=3", run_dir=run))
    assert same_generator(checkpoints / "best.ckpt", checkpoints / f"epoch{first_best:04d}.ckpt")
    assert same_generator(checkpoints / "best.ckpt", checkpoints / "last.ckpt") == (first_best == 2)
    train(make_cfg(*SCORED, f"callbacks.best_checkpoint.mode={mode}", "trainer.max_epochs=5", "resume=true", run_dir=run))
    assert same_generator(checkpoints / "best.ckpt", checkpoints / f"epoch{then_best:04d}.ckpt")
    assert not same_generator(checkpoints / "epoch0002.ckpt", checkpoints / "epoch0003.ckpt")  # so the check can fail
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", *[f"epoch{e:04d}.ckpt" for e in range(5)], "last.ckpt"]


def test_best_checkpoint_follows_the_lowest_classifier_fid(make_cfg, tmp_path):
    # The default: the real classifier FID, evaluated every epoch here. Its best is whichever epoch it is.
    run = tmp_path / "run"
    train(make_cfg(*EVERY_EPOCH, *WITH_METRICS, "trainer.max_epochs=3", run_dir=run))
    fids = [float(r["classifier/fid"]) for r in csv.DictReader(open(run / "metrics.csv")) if r.get("classifier/fid")]
    assert len(fids) == 3
    best_epoch = fids.index(min(fids))
    assert same_generator(run / "checkpoints" / "best.ckpt", run / "checkpoints" / f"epoch{best_epoch:04d}.ckpt")
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    scores = [state["best_model_score"] for key, state in saved.items() if key.startswith("BestCheckpoint")]
    assert scores and float(scores[0]) == pytest.approx(min(fids), rel=1e-5)


def test_best_checkpoint_sees_the_final_evaluation(make_cfg, tmp_path):
    """Evaluations every 5 epochs, 2 epochs: the only evaluation is the final one. It runs at the last epoch's
    end, before the checkpoints, so best.ckpt is that state and last.ckpt holds its score (before, no best.ckpt)."""
    run = tmp_path / "run"
    train(make_cfg(*EVERY_EPOCH, *WITH_METRICS, "metrics.every_n_epochs=5", "trainer.max_epochs=2", run_dir=run))
    fids = [float(r["classifier/fid"]) for r in csv.DictReader(open(run / "metrics.csv")) if r.get("classifier/fid")]
    evaluated_epochs = [r["epoch"] for r in csv.DictReader(open(run / "metrics.csv")) if r.get("classifier/fid")]
    assert len(fids) == 1 and evaluated_epochs == ["1.0"]
    assert same_generator(run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt")
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    scores = [state["best_model_score"] for key, state in saved.items() if key.startswith("BestCheckpoint")]
    assert scores and float(scores[0]) == pytest.approx(fids[0], rel=1e-5)


def test_no_best_checkpoint_and_no_warning_without_the_metric(make_cfg, tmp_path, recwarn):
    run = tmp_path / "run"
    train(make_cfg(*EVERY_EPOCH, "trainer.max_epochs=2", run_dir=run))  # metrics=none (FAST)
    assert not (run / "checkpoints" / "best.ckpt").exists() and (run / "checkpoints" / "last.ckpt").exists()
    assert not [w for w in recwarn if "monitored key" in str(w.message)]


def test_a_monitor_no_evaluation_logs_is_said_once(make_cfg, tmp_path, caplog):
    """callbacks.best_checkpoint.monitor=classifier/fdi (a typo) kept no best.ckpt and said nothing, though metrics ran."""
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="dcgan_lab.callbacks.checkpoints"):
        train(make_cfg(*EVERY_EPOCH, *WITH_METRICS, "callbacks.best_checkpoint.monitor=classifier/fdi",
                       "trainer.max_epochs=2", run_dir=run))
    said = [r.getMessage() for r in caplog.records if r.name == "dcgan_lab.callbacks.checkpoints"]
    assert len(said) == 1 and said[0].startswith(
        "no checkpoints/best.ckpt: callbacks.best_checkpoint.monitor=classifier/fdi is not among the metrics this run "
        "measures (did you mean classifier/fid? "), said
    assert not (run / "checkpoints" / "best.ckpt").exists()
