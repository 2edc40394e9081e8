"""Resuming with other settings: what the config says is what trains, or one line says why it cannot."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from dcgan_lab.checkpoint_io import apply_optimizer_settings, optimizer_setting_changes
from dcgan_lab.pipeline import build_module, main, train

# Two batches an epoch, the rates logged at every one.
SETTINGS = ("trainer.limit_train_batches=2", "trainer.log_every_n_steps=1")


def learning_rates(run: Path) -> list[tuple[float, float, float]]:
    """(G step, lr/d, lr/g) of every logged training row of metrics.csv."""
    with open(run / "metrics.csv") as handle:
        return [(float(row["g_step"]), float(row["lr/d"]), float(row["lr/g"])) for row in csv.DictReader(handle)
                if row.get("lr/g")]


def optimizer_groups(ckpt: Path) -> list[dict]:
    """D's and G's first parameter group (lr, betas, ...) as last.ckpt holds them."""
    return [state["param_groups"][0] for state in torch.load(ckpt, weights_only=True)["optimizer_states"]]


def test_a_resume_trains_with_the_configured_optimizer_settings(make_cfg, tmp_path):
    # The divergence error's advice, "lower optimizer.lr_g", followed by a resume: the new rate must apply (Lightning
    # alone restores the saved one, while config.yaml says the new one).
    run = tmp_path / "run"
    train(make_cfg(*SETTINGS, "trainer.max_epochs=2", run_dir=run))
    resumed = train(make_cfg(*SETTINGS, "trainer.max_epochs=4", "resume=true", "optimizer.lr_g=5e-5",
                             "optimizer.betas=[0.3,0.999]", run_dir=run))
    assert resumed["g_steps"] == 8
    rates = learning_rates(run)
    assert [step for step, _, _ in rates] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [(lr_d, lr_g) for _, lr_d, lr_g in rates] == [(pytest.approx(2e-4), pytest.approx(2e-4))] * 4 + [
        (pytest.approx(2e-4), pytest.approx(5e-5))] * 4
    d_group, g_group = optimizer_groups(run / "checkpoints" / "last.ckpt")
    assert tuple(g_group["betas"]) == tuple(d_group["betas"]) == (0.3, 0.999)


def test_a_changed_rate_rescales_the_saved_schedule_and_its_progress(make_cfg, tmp_path):
    # A schedule's saved rate carries its progress (and any divergence-guard cut): a new configured rate scales it
    # and the schedule's base rates, so the decay goes on from where it stood, at the new level.
    run = tmp_path / "run"
    train(make_cfg(*SETTINGS, "schedule=linear", "trainer.max_epochs=3", "callbacks.model_checkpoint.every_n_epochs=1",
                   run_dir=run))
    checkpoint = torch.load(run / "checkpoints" / "epoch0001.ckpt", weights_only=True)  # 4 of 6 G steps
    saved_lrs = [state["param_groups"][0]["lr"] for state in checkpoint["optimizer_states"]]
    assert 0 < saved_lrs[1] < 2e-4  # decaying
    module = build_module(make_cfg(*SETTINGS, "schedule=linear", "optimizer.lr_g=5e-5", "optimizer.weight_decay_d=0.1"))
    changes = optimizer_setting_changes(checkpoint, {"discriminator": module.optimizer_d, "generator": module.optimizer_g}, "x")
    assert changes == [("discriminator", "weight_decay", 0.0, 0.1), ("generator", "lr", 2e-4, 5e-5)]
    apply_optimizer_settings(checkpoint, changes)
    (d_state, g_state), (d_schedule, g_schedule) = checkpoint["optimizer_states"], checkpoint["lr_schedulers"]
    assert g_state["param_groups"][0]["lr"] == pytest.approx(saved_lrs[1] / 4)
    assert g_state["param_groups"][0]["initial_lr"] == pytest.approx(5e-5) and g_schedule["base_lrs"] == [pytest.approx(5e-5)]
    assert d_state["param_groups"][0]["lr"] == saved_lrs[0] and d_schedule["base_lrs"] == [pytest.approx(2e-4)]
    assert d_state["param_groups"][0]["weight_decay"] == 0.1 and g_state["param_groups"][0]["weight_decay"] == 0.0


def test_a_resume_under_a_longer_plan_follows_the_new_schedule_from_its_first_step(make_cfg, tmp_path):
    # 2 epochs of a linear decay end at rate 0; resumed to 4 epochs, the schedule plans 8 G steps: from the first
    # resumed step on, the rates are those of a run planned for 4 epochs from the start.
    whole = Path(train(make_cfg(*SETTINGS, "schedule=linear", "trainer.max_epochs=4", run_dir=tmp_path / "whole"))["output_dir"])
    run = tmp_path / "split"
    train(make_cfg(*SETTINGS, "schedule=linear", "trainer.max_epochs=2", run_dir=run))
    train(make_cfg(*SETTINGS, "schedule=linear", "trainer.max_epochs=4", "resume=true", run_dir=run))
    expected = learning_rates(whole)[4:]
    assert expected[0][2] == pytest.approx(2e-4) and expected[-1][2] < 2e-4  # the decay's second half
    assert learning_rates(run)[4:] == [pytest.approx(rates) for rates in expected]


@pytest.mark.parametrize("other", ["optimizer=sgd", "optimizer=rmsprop", "optimizer=adamw"])
def test_a_resume_with_another_kind_of_optimizer_is_one_line_and_writes_nothing(make_cfg, tmp_path, capsys, other):
    run = tmp_path / "run"
    main(make_cfg("trainer.limit_train_batches=2", run_dir=run))
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    with pytest.raises(SystemExit) as exit_info:
        main(make_cfg("trainer.limit_train_batches=2", "trainer.max_epochs=2", "resume=true", other, run_dir=run))
    assert exit_info.value.code == 2
    kind = {"optimizer=sgd": "SGD", "optimizer=rmsprop": "RMSprop", "optimizer=adamw": "AdamW"}[other]
    assert capsys.readouterr().err.strip() == (
        f"error: checkpoint {run / 'checkpoints' / 'last.ckpt'} was trained with Adam for the discriminator, and this "
        f"run builds {kind}: one optimizer's state does not carry over to another. Resume with the checkpoint's "
        "optimizer (its run folder's config.yaml), or start a new run")
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before


def test_resuming_a_finished_run_leaves_its_record_alone(make_cfg, tmp_path, capsys):
    run = tmp_path / "run"
    main(make_cfg("trainer.limit_train_batches=2", "trainer.max_epochs=2", run_dir=run))
    status = (run / "status.json").read_bytes()
    assert json.loads(status)["final_metrics"]["loss/g"] > 0
    with pytest.raises(SystemExit) as exit_info:
        main(make_cfg("trainer.limit_train_batches=2", "trainer.max_epochs=2", "resume=true", run_dir=run))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: checkpoint {run / 'checkpoints' / 'last.ckpt'} has already trained 2 epochs, all that "
        "trainer.max_epochs=2 asks for: nothing to resume, and the run's results stay as they are; to train on, raise "
        "the limit (e.g. trainer.max_epochs=4)")
    assert (run / "status.json").read_bytes() == status
    with pytest.raises(SystemExit):  # the same in G steps
        main(make_cfg("trainer.limit_train_batches=2", "trainer.max_epochs=9", "trainer.max_steps=4", "resume=true",
                      run_dir=run))
    assert "has already trained 4 G steps, all that trainer.max_steps=4 asks for" in capsys.readouterr().err


def test_a_resumed_runs_train_time_counts_its_earlier_parts(make_cfg, tmp_path):
    # 3 epochs, then 1 more: the whole run's train time is the first part's (as its checkpoint holds it) plus the
    # second's, not the second's alone (about a third of the first's).
    run = tmp_path / "run"
    main(make_cfg("trainer.limit_train_batches=2", "trainer.max_epochs=3", run_dir=run))
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["train_time_s"]
    assert 0 < first <= json.loads((run / "status.json").read_text())["train_time_s"]
    main(make_cfg("trainer.limit_train_batches=2", "trainer.max_epochs=4", "resume=true", run_dir=run))
    status = json.loads((run / "status.json").read_text())
    assert first < status["train_time_s"] <= first + status["wall_time_s"]  # wall_time_s: this part's


def test_ckpt_path_takes_a_run_folder_and_callbacks_none_writes_no_checkpoint(make_cfg, tmp_path, capsys, recwarn):
    source = tmp_path / "source"
    train(make_cfg("trainer.limit_train_batches=2", run_dir=source))
    recwarn.clear()
    resumed = train(make_cfg("trainer.limit_train_batches=2", "trainer.max_epochs=2", f"ckpt_path={source}",
                             run_dir=tmp_path / "from_folder"))
    assert resumed["g_steps"] == 4  # went on from the folder's last.ckpt (2 G steps)
    # Not Lightning's "The dirpath has changed from '<source>/checkpoints' ... won't be reloaded": the new folder's
    # best.ckpt is its own, which is what a continuation into a new folder asks for.
    assert [str(w.message) for w in recwarn] == []
    bare = tmp_path / "bare"
    bare_settings = ["logger=csv", "model.ngf=8", "model.ndf=8", "dataset.batch_size=16", "trainer.max_epochs=1",
                     "trainer.limit_train_batches=2", "metrics=none", "callbacks=none"]
    train(make_cfg(*bare_settings, fast=False, run_dir=bare))
    assert not (bare / "checkpoints").exists()  # not Lightning's own epoch=0-step=4.ckpt either
    with pytest.raises(SystemExit):
        main(make_cfg("trainer.max_epochs=2", f"ckpt_path={bare}", run_dir=tmp_path / "from_bare"))
    assert capsys.readouterr().err.strip() == f"error: {bare} holds no checkpoints/last.ckpt; pass a run folder or a .ckpt file"
