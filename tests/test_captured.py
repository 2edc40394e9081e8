"""The capturable step (dcgan_lab/captured.py): on CPUs it runs eagerly and must reproduce Lightning's eager step
number for number; on CUDA (tests skipped elsewhere) its graph replays must train like the eager step."""
import csv
import logging
from pathlib import Path

import lightning as L
import pytest
import torch

from dcgan_lab.captured import StaticStep, capture_blockers, portable_optimizer_states
from dcgan_lab.errors import ConfigError
from dcgan_lab.pipeline import train
from tests.conftest import compose_config
from tests.test_step_pinned import BASE, CASES, weight_fingerprint

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class UseStaticStep(L.Callback):
    """Runs the run through StaticStep without capture (the CPU form of the captured step)."""

    def on_train_start(self, trainer, pl_module):
        pl_module.static_step = StaticStep(pl_module, capture=False)


class RecordBlockers(L.Callback):
    seen: list = []

    def on_train_start(self, trainer, pl_module):
        RecordBlockers.seen = capture_blockers(pl_module, trainer)


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", [n for n in CASES if "accumulate" not in n])
def test_static_step_reproduces_the_pinned_eager_numbers(tmp_path, name):
    overrides, expected = CASES[name]
    run = Path(train(compose_config(tmp_path / "run", BASE + overrides + [
        "+callbacks.static={_target_:tests.test_captured.UseStaticStep}"]))["output_dir"])
    rows = metrics(run)
    for metric in ("loss/d", "loss/g"):
        if metric in expected:
            torch.testing.assert_close([float(r[metric]) for r in rows if r.get(metric)], expected[metric], rtol=1e-4, atol=1e-6)
    state = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    for network in ("generator", "discriminator"):
        torch.testing.assert_close(weight_fingerprint(state, network), expected[network], rtol=1e-4, atol=1e-6)
    # Lightning's own counters advanced as if its optimizer wrappers had stepped: 6 D + 6 G (or 3 G) updates
    last = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    n_critic = 2 if "ncritic" in name else 1
    assert last["global_step"] == 6 + 6 // n_critic


@pytest.mark.parametrize("overrides, blockers", [
    ([], []),
    (["training.accumulate=2"], ["training.accumulate > 1"]),
    (["model=progressive", "model.growth.fade_images=16", "model.growth.stable_images=16"], ["progressive growing (the networks change shape)"]),
    (["optimizer=rmsprop"], []),
])
def test_capture_blockers_name_what_keeps_the_step_eager(make_cfg, overrides, blockers):
    train(make_cfg(*overrides, "trainer.limit_train_batches=1", "+callbacks.blockers={_target_:tests.test_captured.RecordBlockers}"))
    assert RecordBlockers.seen == blockers


def test_portable_optimizer_states_resume_in_an_eager_optimizer():
    param = torch.nn.Parameter(torch.ones(3))
    adam = torch.optim.Adam([param], lr=2e-4)
    param.grad = torch.ones(3)
    adam.step()
    state = adam.state_dict()
    state["param_groups"][0].update(lr=torch.tensor(1e-4), capturable=True)  # as a captured run holds them
    live_step = state["state"][0]["step"]
    state["state"][0]["step"] = live_step.to(torch.float64)
    portable = portable_optimizer_states([state])[0]
    assert portable["param_groups"][0]["lr"] == pytest.approx(1e-4) and isinstance(portable["param_groups"][0]["lr"], float)
    assert portable["param_groups"][0]["capturable"] is False
    assert portable["state"][0]["step"].dtype == torch.float32 and portable["state"][0]["step"].device.type == "cpu"
    assert state["param_groups"][0]["capturable"] is True  # the live state is left alone
    fresh = torch.optim.Adam([param], lr=1.0)
    fresh.load_state_dict(portable)
    fresh.step()
    assert int(fresh.state[param]["step"]) == 2


def test_compile_refuses_what_crashes_on_cuda():
    from dcgan_lab.callbacks import Compile

    assert Compile(enabled=True).refusal("cpu", channels_last=True) is None
    assert "channels_last" in Compile(enabled=True).refusal("cuda", channels_last=True)
    assert "reduce-overhead" in Compile(enabled=True, mode="reduce-overhead").refusal("cuda", channels_last=False)
    assert Compile(enabled=True).refusal("cuda", channels_last=False) is None


# ---- on a GPU ------------------------------------------------------------------------------------
GPU = ["trainer.accelerator=gpu", "trainer.precision=32-true", "trainer.log_every_n_steps=1", "metrics=none",
       "callbacks.progress_bar=null", "trainer.max_epochs=1", "trainer.limit_train_batches=20", "logger=csv",
       "trainer.enable_model_summary=false"]


@cuda
@pytest.mark.parametrize("overrides", [[], ["loss=wgan_gp", "training.n_critic=2", "model.ema_decay=0.9", "augment=diffaugment",
                                            "training.grad_clip=1", "schedule=linear"]], ids=["default", "wgan_gp_mix"])
def test_captured_step_trains_like_the_eager_step(tmp_path, overrides, caplog):
    runs = {}
    for mode in ("true", "false"):
        with caplog.at_level(logging.INFO, logger="dcgan_lab.module"):
            runs[mode] = Path(train(compose_config(tmp_path / mode, GPU + overrides + [f"training.cuda_graph={mode}"]))["output_dir"])
    assert any("CUDA graph of the step: on" in r.getMessage() for r in caplog.records)
    captured, eager = metrics(runs["true"]), metrics(runs["false"])
    for name in ("loss/d", "loss/g"):
        a = torch.tensor([float(r[name]) for r in captured if r.get(name)])
        b = torch.tensor([float(r[name]) for r in eager if r.get(name)])
        assert len(a) == len(b) >= 10
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@cuda
def test_captured_and_eager_checkpoints_resume_each_other(tmp_path):
    first = Path(train(compose_config(tmp_path / "a", GPU + ["training.cuda_graph=true"]))["output_dir"])
    second = train(compose_config(tmp_path / "b", GPU + ["training.cuda_graph=false", "trainer.max_epochs=2",
                                                         f"ckpt_path={first / 'checkpoints/last.ckpt'}"]))
    third = train(compose_config(tmp_path / "c", GPU + ["training.cuda_graph=true", "trainer.max_epochs=3",
                                                        f"ckpt_path={Path(second['output_dir']) / 'checkpoints/last.ckpt'}"]))
    assert third["g_steps"] == 60 and all(torch.isfinite(torch.tensor(v)) for v in third["metrics"].values())


@cuda
def test_blocked_options_fall_back_with_one_info_line(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="dcgan_lab.module"):
        train(compose_config(tmp_path / "acc", GPU + ["training.accumulate=2"]))
    assert [r.getMessage() for r in caplog.records if "CUDA graph" in r.getMessage()] == [
        "CUDA graph of the step: off (training.accumulate > 1); the eager step runs"]


@cuda
@pytest.mark.parametrize("overrides, refused", [
    (["callbacks.compile.enabled=true"], "channels_last"),
    (["callbacks.compile.enabled=true", "callbacks.compile.mode=reduce-overhead", "callbacks.channels_last.enabled=false"], "reduce-overhead"),
])
def test_compile_on_cuda_refuses_with_one_line(tmp_path, overrides, refused):
    with pytest.raises(ConfigError, match=refused):
        train(compose_config(tmp_path / "run", GPU + overrides))


@cuda
def test_compile_without_channels_last_trains_on_cuda(tmp_path):
    result = train(compose_config(tmp_path / "run", GPU + ["callbacks.compile.enabled=true", "callbacks.channels_last.enabled=false"]))
    assert result["g_steps"] == 20
