"""DDP on two CPU processes (gloo): the manual-optimization GAN step stays in sync, each rank trains on its own
images and latents, BatchNorm statistics stay per rank, rank 0 alone writes.

trainer.sync_batchnorm=true cannot run here: PyTorch's SyncBatchNorm refuses CPU modules."""
from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.conftest import ROOT, run_cli


class RankZeroScore(L.Callback):
    """An evaluation the way the lab's metrics run one under DDP: on rank 0 only (best.ckpt's monitored value)."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.global_rank == 0:
            trainer.callback_metrics["test/score"] = torch.tensor(1.0)


class RankProbe(L.Callback):
    """Test probe on every rank, saved to `folder`/rank<r>.pt at the end: the images of every batch it trained on,
    the first latents G got, D's output on the first batch (this rank's own number, before any averaging), the
    running mean of G's first BatchNorm as each training forward saw it and after each step, and the final
    parameters, buffers and logged (averaged) scalars."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.images, self.first_z, self.first_d_output = [], None, None
        self.bn_at_forward, self.bn_after_step = [], []

    def on_train_start(self, trainer, pl_module):
        # Hooks go on after Lightning has wrapped the model (and converted BatchNorm for sync_batchnorm=true).
        self.bn = next(m for m in pl_module.generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
        self.bn_kind = type(self.bn).__name__

        def bn_forward(module, args):
            if module.training:
                self.bn_at_forward.append(module.running_mean.detach().clone())

        def g_forward(module, args):
            if self.first_z is None and module.training:
                self.first_z = args[0].detach().clone()

        def d_forward(module, args, output):
            if self.first_d_output is None and module.training:
                self.first_d_output = output.detach().float().clone()

        self.bn.register_forward_pre_hook(bn_forward)
        pl_module.generator.register_forward_pre_hook(g_forward)
        pl_module.discriminator.register_forward_hook(d_forward)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.images.append(batch[0].detach().cpu().clone())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.bn_after_step.append(self.bn.running_mean.detach().clone())

    def on_train_end(self, trainer, pl_module):
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save({
            "images": torch.cat(self.images), "first_z": self.first_z, "first_d_output": self.first_d_output,
            "bn_kind": self.bn_kind, "bn_at_forward": self.bn_at_forward, "bn_after_step": self.bn_after_step,
            "params": {k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()},
            "buffers": {k: v.detach().cpu().clone() for k, v in pl_module.named_buffers()},
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "world_size": trainer.world_size,
        }, self.folder / f"rank{trainer.global_rank}.pt")


def run_two_ranks(tmp_path: Path) -> tuple[Path, dict, dict]:
    """One epoch over 64 distinct images, batches of 8 per rank: 4 steps, each rank seeing its own half."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(64):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(images / f"img{i:02d}.png")
    run, probe = tmp_path / "run", tmp_path / "probe"
    result = run_cli([
        "trainer=ddp_cpu", "dataset=image_folder", f"dataset.path={images}", "dataset.image_size=16", "dataset.channels=1",
        "dataset.batch_size=8", f"paths.cache_dir={tmp_path / 'cache'}", "logger=csv", "model.ngf=8", "model.ndf=8",
        "metrics=none", "trainer.max_epochs=1", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
        "+callbacks.probe._target_=tests.test_ddp.RankProbe", f"+callbacks.probe.folder={probe}",
        "callbacks.best_checkpoint.monitor=test/score", "+callbacks.score._target_=tests.test_ddp.RankZeroScore",
        f"hydra.run.dir={run}",
    ], cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (tmp_path / "console.txt").write_text(result.stdout + result.stderr)  # both ranks' output, as the user saw it
    rank0, rank1 = (torch.load(probe / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2
    return run, rank0, rank1


@pytest.mark.slow  # three processes importing lightning: ~30 s on 2 idle cores
def test_ddp_cpu_two_ranks_train_on_their_own_shards_keep_identical_networks_and_write_results_once(tmp_path):
    run, rank0, rank1 = run_two_ranks(tmp_path)

    # Each rank reads its own shard of the epoch: the two halves together are every image once.
    assert len(rank0["images"]) == len(rank1["images"]) == 4 * 8
    shard0 = {image.numpy().tobytes() for image in rank0["images"]}
    shard1 = {image.numpy().tobytes() for image in rank1["images"]}
    assert len(shard0) == len(shard1) == 32 and not shard0 & shard1
    # Each rank draws its own latents, so D sees other fakes and other reals on each: its outputs differ ...
    assert rank0["first_z"].shape == rank1["first_z"].shape and not torch.equal(rank0["first_z"], rank1["first_z"])
    assert not torch.allclose(rank0["first_d_output"], rank1["first_d_output"])
    # ... while the gradients of both networks are all-reduced at every step: identical weights on both ranks,
    assert any(k.startswith("generator.") for k in rank0["params"]) and any(k.startswith("discriminator.") for k in rank0["params"])
    torch.testing.assert_close(rank0["params"], rank1["params"], rtol=0, atol=0)
    # and the logged scalars are averaged over ranks, so both report the same.
    for key in ("loss/d", "loss/g", "D(x)"):
        assert rank0["metrics"][key] == pytest.approx(rank1["metrics"][key], rel=1e-6), key

    # BatchNorm without sync_batchnorm: each rank normalises with its own batch and carries its own running
    # statistics from step to step (nothing is broadcast), so after the first step they differ between ranks.
    assert rank0["bn_kind"] == rank1["bn_kind"] == "BatchNorm2d"
    for rank in (rank0, rank1):
        assert len(rank["bn_at_forward"]) == len(rank["bn_after_step"]) == 4
        for seen, left in zip(rank["bn_at_forward"][1:], rank["bn_after_step"]):
            torch.testing.assert_close(seen, left, rtol=0, atol=0)
    for after0, after1 in zip(rank0["bn_after_step"], rank1["bn_after_step"]):
        assert not torch.allclose(after0, after1)

    # Results written once, by rank 0: one config, one metrics.csv with each step once, one checkpoint, one grid.
    # best.ckpt too: rank 0 alone measured the score, and saving it took both ranks (a collective save).
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (run / "samples/last.png").is_file() and (run / "config.yaml").is_file()
    assert not list(run.rglob("version_*")) and not (run / "lightning_logs").exists()
    with open(run / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("loss/g")]
    assert len(steps) == len(set(steps)) == 4
    # One voice on the console (the epoch's line and the networks' table, not one per rank), and in train.log.
    for text in ((run.parent / "console.txt").read_text(), (run / "train.log").read_text()):
        assert text.count("networks:") == 1 and text.count("epoch 0 done (1 of 1)") == 1, text[-3000:]
    saved = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert saved["batches_seen"] == 4
    torch.testing.assert_close({k: v for k, v in saved["state_dict"].items() if k in rank0["params"]}, rank0["params"], rtol=0, atol=0)
    # The checkpoint holds rank 0's BatchNorm statistics.
    torch.testing.assert_close({k: v for k, v in saved["state_dict"].items() if k in rank0["buffers"]}, rank0["buffers"], rtol=0, atol=0)
