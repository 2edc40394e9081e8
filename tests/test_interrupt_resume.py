"""Ctrl-C or SIGTERM mid-epoch, then resume=true: with trainer.deterministic=true the run ends bit-identical to one
never interrupted (the data order of the interrupted epoch travels in the checkpoint with the RNG states); in between,
status.json says `interrupted` and how to continue, and the process exits with 128 + the signal's number."""
import csv
import json
import signal
import warnings
from pathlib import Path

import pytest
import torch

from dcgan_lab.pipeline import main, train

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
