"""A save killed between write and rename leaves `.<name>.<pid>.tmp<suffix>` behind; the next start in that
run folder (a resume) removes such files of writers that are gone and says so in one line."""
import hashlib
import logging
import os
import signal
import subprocess
from pathlib import Path

from dcgan_lab.pipeline import train
from tests.conftest import PYTHON, ROOT

KILLED_MID_SAVE = """
import os, signal, sys
from dcgan_lab.atomic import replaced_atomically
with replaced_atomically(sys.argv[1]) as tmp:
    tmp.write_bytes(b"the first half of a file")
    os.kill(os.getpid(), signal.SIGKILL)  # killed before the rename
"""


def killed_mid_save(target: Path) -> Path:
    """The temp file a process killed while saving `target` leaves behind."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([PYTHON, "-c", KILLED_MID_SAVE, str(target)], env=env, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (leftover,) = target.parent.glob(f".{target.stem}.*.tmp{target.suffix}")
    return leftover


def test_resume_removes_temp_files_of_killed_saves_and_keeps_live_ones(make_cfg, tmp_path, caplog):
    run = tmp_path / "run"
    train(make_cfg("trainer.limit_train_batches=1", run_dir=run))
    last = run / "checkpoints" / "last.ckpt"
    last_digest = hashlib.md5(last.read_bytes()).hexdigest()
    stale = [killed_mid_save(last), killed_mid_save(run / "samples" / "epoch_0001.png")]
    assert hashlib.md5(last.read_bytes()).hexdigest() == last_digest  # the kill left last.ckpt as it was
    # This process's own pid on a leftover: an earlier process had it (containers reuse pids); it is stale too.
    stale.append(run / f".status.{os.getpid()}.tmp.json")
    stale[-1].write_text('{"status": "runn')
    writer = subprocess.Popen(["sleep", "120"])  # a live process: its temp file may be a write in progress
    try:
        in_progress = run / "samples" / f".epoch_0002.{writer.pid}.tmp.png"
        in_progress.write_bytes(b"being written")
        with caplog.at_level(logging.INFO, logger="dcgan_lab.run_folder"):
            resumed = train(make_cfg("trainer.limit_train_batches=1", "trainer.max_epochs=2", "resume=true", run_dir=run))
        assert [p for p in stale if p.exists()] == []
        assert in_progress.read_bytes() == b"being written"
    finally:
        writer.kill()
        writer.wait()
    messages = [r.getMessage() for r in caplog.records if "temp file" in r.getMessage()]
    assert messages == [f"removed 3 temp file(s) left by killed saves in {run} (./, checkpoints/, samples/)"]
    assert resumed["g_steps"] == 2  # epoch 0 from the checkpoint, epoch 1 trained now
