"""DDP on two CPU processes (gloo): the manual-optimization GAN step stays in sync, rank 0 alone writes."""
from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.conftest import ROOT, run_cli


class SaveRankState(L.Callback):
    """Test probe: every rank saves its parameters, buffers and last synced metrics to `folder`/rank<r>.pt."""

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def on_train_end(self, trainer, pl_module):
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save({
            "params": {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()},
            "buffers": {k: v.detach().cpu().clone() for k, v in pl_module.named_buffers()},
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "world_size": trainer.world_size,
        }, self.folder / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow  # three processes importing lightning: ~30 s on 2 idle cores
def test_ddp_cpu_two_ranks_keep_identical_networks_and_write_results_once(tmp_path):
    run, probe = tmp_path / "run", tmp_path / "probe"
    result = run_cli([
        "trainer=ddp_cpu", "dataset=mnist_mini", "logger=csv", "model.ngf=8", "model.ndf=8", "dataset.batch_size=16",
        "trainer.max_steps=3", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false", "callbacks.progress_bar=null",
        "+callbacks.probe._target_=tests.test_ddp.SaveRankState", f"+callbacks.probe.folder={probe}",
        f"hydra.run.dir={run}",
    ], cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    rank0, rank1 = (torch.load(probe / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert any(k.startswith("generator.") for k in rank0["params"]) and any(k.startswith("discriminator.") for k in rank0["params"])
    # Gradients of both networks were all-reduced at every step: identical weights on both ranks.
    torch.testing.assert_close(rank0["params"], rank1["params"], rtol=0, atol=0)
    # Logged scalars are averaged over ranks (each rank saw different images), so both ranks report the same.
    for key in ("loss/d", "loss/g", "D(x)"):
        assert rank0["metrics"][key] == pytest.approx(rank1["metrics"][key], rel=1e-6), key

    # Results written once, by rank 0: one config, one metrics.csv with each step once, one checkpoint, one grid.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert (run / "samples/last.png").is_file() and (run / "config.yaml").is_file()
    assert not list(run.rglob("version_*")) and not (run / "lightning_logs").exists()
    with open(run / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("loss/g")]
    assert len(steps) == len(set(steps)) == 3
    saved = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert saved["batches_seen"] == 3
    torch.testing.assert_close({k: v for k, v in saved["state_dict"].items() if k in rank0["params"]}, rank0["params"], rtol=0, atol=0)
