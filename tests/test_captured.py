"""The capturable step (dcgan_lab/captured.py): on CPUs it runs eagerly and must reproduce Lightning's eager step
number for number; on CUDA (tests skipped elsewhere) its graph replays must train like the eager step."""
import csv
import json
import logging
import os
from pathlib import Path

import lightning as L
import pytest
import torch

from dcgan_lab.captured import StaticStep, capture_blockers, make_capturable, portable_optimizer_states
from dcgan_lab.errors import ConfigError
from dcgan_lab.pipeline import train
from tests.conftest import compose_config, progress_bar
from tests.test_speed import current_batch
from tests.test_step_pinned import BASE, CASES, assert_matches_pinned

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class UseStaticStep(L.Callback):
    """Runs the run through StaticStep without capture (the CPU form of the captured step)."""

    def on_train_start(self, trainer, pl_module):
        pl_module.static_step = StaticStep(pl_module, capture=False)


class CapturableOptimizers(L.Callback):
    """An eager run with the optimizer arithmetic a captured run uses (dcgan_lab.captured.make_capturable)."""

    def on_train_start(self, trainer, pl_module):
        make_capturable(pl_module.optimizers(use_pl_optimizer=False), pl_module.device, scheduled=False)


class RecordBlockers(L.Callback):
    seen: list = []

    def on_train_start(self, trainer, pl_module):
        RecordBlockers.seen = capture_blockers(pl_module, trainer)


def metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", [n for n in CASES if "accumulate" not in n])
def test_static_step_reproduces_the_pinned_eager_numbers(tmp_path, name):
    run = Path(train(compose_config(tmp_path / "run", BASE + CASES[name][0] + [
        "+callbacks.static={_target_:tests.test_captured.UseStaticStep}"]))["output_dir"])
    assert_matches_pinned(run, name)
    # Lightning's own counters advanced as if its optimizer wrappers had stepped: 6 D + 6 G (or 3 G) updates
    last = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    n_critic = 2 if "ncritic" in name else 1
    assert last["global_step"] == 6 + 6 // n_critic


@pytest.mark.parametrize("overrides, penalties", [
    # G's loss also runs D on the real batch (no gradient): the static step gives it the same D(x)
    (["loss=ragan", "loss.feature_matching_weight=1"], ["penalty/feature_matching"]),
    # bCR runs D on shifted reals and fakes, drawn after instance noise's draws, in the same order as the eager step
    (["ablation=bcr", "training.instance_noise=0.1"], ["penalty/consistency_real", "penalty/consistency_fake"]),
], ids=["ragan_feature_matching", "bcr_noise"])
def test_static_step_trains_and_logs_as_the_eager_step_does(tmp_path, overrides, penalties):
    runs = {}
    for mode, extra in (("eager", []), ("static", ["+callbacks.static={_target_:tests.test_captured.UseStaticStep}"])):
        runs[mode] = metrics(Path(train(compose_config(tmp_path / mode, BASE + overrides + extra))["output_dir"]))
    assert [n for n in runs["static"][0] if n.startswith("penalty/")] == sorted(penalties)
    for name in ("loss/d", "loss/g", *penalties):
        eager = [float(r[name]) for r in runs["eager"] if r.get(name)]
        assert len(eager) == 6 and all(value > 0 for value in eager)
        assert [float(r[name]) for r in runs["static"] if r.get(name)] == pytest.approx(eager, rel=1e-5)


def test_static_step_logs_the_rates_each_batch_used(make_cfg):
    """lr/d and lr/g from the static step's path equal the eager path's (test_training's linear-decay case)."""
    run = Path(train(make_cfg("schedule=linear", "training.n_critic=2", "trainer.limit_train_batches=8",
                              "trainer.log_every_n_steps=1", "+callbacks.static={_target_:tests.test_captured.UseStaticStep}"))["output_dir"])
    rows = metrics(run)
    expected = [2e-4 * factor for factor in (1, 1, 1, 1, 1, 1, 0.5, 0.5)]
    for name in ("lr/d", "lr/g"):
        assert [float(r[name]) for r in rows if r.get(name)] == pytest.approx(expected), name


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


@pytest.fixture
def exact_fp32():
    """fp32 without TF32 and with deterministic cuDNN algorithms: otherwise two eager runs differ by ~1e-3 in a
    few steps (TF32 rounding, atomics in convolution backward) and GAN training amplifies it."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield ["trainer.deterministic=warn", "trainer.benchmark=false"]
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
    torch.use_deterministic_algorithms(False)


@cuda
@pytest.mark.parametrize("overrides", [
    [],
    ["loss=wgan_gp", "training.n_critic=2", "model.ema_decay=0.9", "augment=diffaugment", "training.grad_clip=1",
     "schedule=linear"],
    # the instance noise anneals to 0 at G step 8: the step switches to a graph without its draws
    ["loss=lsgan", "model.attention=true", "model.spectral_norm_d=true", "training.real_label=0.9",
     "training.flip_prob=0.1", "training.instance_noise=0.1", "training.instance_noise_anneal_steps=8",
     "model.conditional=true", "activation=silu"],
    # G's relativistic loss runs D on the real batch too, without gradient, inside the graph; bCR runs D on shifts
    ["loss=ragan", "loss.feature_matching_weight=1", "model.ema_decay=0.9", "ablation=bcr"],
], ids=["default", "wgan_gp_mix", "lsgan_attention_sn_label_tricks_noise_conditional", "ragan_feature_matching_ema_bcr"])
def test_captured_step_trains_like_the_eager_step(tmp_path, overrides, caplog, exact_fp32):
    """The eager run uses the optimizers' capturable arithmetic too (float32 bias corrections on the device; the
    default computes them as float64 on the host): measured on an H200, that rounding alone grows to 1.5e-2 in
    loss/d over 20 BCE steps, as a 1e-7 nudge of D's weights grows to 3e-3 on a CPU. Only the replay differs."""
    runs = {}
    for mode, extra in (("true", []), ("false", ["+callbacks.capturable={_target_:tests.test_captured.CapturableOptimizers}"])):
        with caplog.at_level(logging.INFO, logger="dcgan_lab.module"):
            runs[mode] = Path(train(compose_config(tmp_path / mode, GPU + overrides + exact_fp32 + extra + [
                f"training.cuda_graph={mode}"]))["output_dir"])
    assert any("CUDA graph of the step: on" in r.getMessage() for r in caplog.records)
    captured, eager = metrics(runs["true"]), metrics(runs["false"])
    for name in ("loss/d", "loss/g"):
        a = torch.tensor([float(r[name]) for r in captured if r.get(name)])
        b = torch.tensor([float(r[name]) for r in eager if r.get(name)])
        assert len(a) == len(b) >= 10
        if os.environ.get("DCGAN_LAB_EVIDENCE"):  # the device script keeps the measured gap for the closing note
            with open(os.environ["DCGAN_LAB_EVIDENCE"], "a") as f:
                f.write(json.dumps({"case": "+".join(overrides) or "default", "loss": name, "steps": len(a),
                                    "max_rel_diff": float(((a - b).abs() / b.abs().clamp_min(1e-8)).max())}) + "\n")
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
    (["callbacks.compile.enabled=true", "callbacks.channels_last.enabled=true"], "channels_last"),
    (["callbacks.compile.enabled=true", "callbacks.compile.mode=reduce-overhead", "callbacks.channels_last.enabled=false"], "reduce-overhead"),
])
def test_compile_on_cuda_refuses_with_one_line(tmp_path, overrides, refused):
    with pytest.raises(ConfigError, match=refused):
        train(compose_config(tmp_path / "run", GPU + overrides))


@cuda
def test_compile_without_channels_last_trains_on_cuda(tmp_path):
    result = train(compose_config(tmp_path / "run", GPU + ["callbacks.compile.enabled=true", "callbacks.channels_last.enabled=false"]))
    assert result["g_steps"] == 20


class RecordSyncs(L.Callback):
    """On CUDA: the batches during which the host waited for the GPU (torch's sync debug mode), each with the
    frames that asked for it (batches as tests.test_speed.current_batch counts them)."""

    syncs: dict = {}

    def on_train_start(self, trainer, pl_module):
        import traceback
        import warnings

        self.caught = warnings.catch_warnings()
        self.caught.__enter__()
        warnings.simplefilter("always")

        def keep(message, *args, **kwargs):
            if "synchroniz" in str(message):
                frames = [f"{f.filename.split('/')[-1]}:{f.lineno} {f.name}" for f in traceback.extract_stack()[-9:-1]]
                RecordSyncs.syncs.setdefault(current_batch(trainer), []).append(" <- ".join(reversed(frames)))

        warnings.showwarning = keep
        torch.cuda.set_sync_debug_mode("warn")

    def on_train_end(self, trainer, pl_module):
        torch.cuda.set_sync_debug_mode("default")
        self.caught.__exit__(None, None, None)


@cuda
def test_captured_steps_never_wait_for_the_gpu(tmp_path):
    """Between logging batches (19, 39) the host never waits for the GPU: no copies back, no pageable uploads,
    no reads. The warm-up and the recording (batches 0-3) may."""
    RecordSyncs.syncs = {}
    train(compose_config(tmp_path / "run", [o for o in GPU if "log_every" not in o and "limit_train" not in o] + [
        "trainer.limit_train_batches=40", "trainer.log_every_n_steps=20", "callbacks.divergence_guard.every_n_batches=20",
        *progress_bar(20),
        "+callbacks.syncs={_target_:tests.test_captured.RecordSyncs}"]))
    waited = {b: m for b, m in RecordSyncs.syncs.items() if b not in (19, 39) and b > 3}
    assert not waited, waited
