"""Step-speed options as callbacks, so the GAN step itself stays plain PyTorch.

Measured on 2 CPU cores (benchmarks/bench.py): channels_last + bf16 autocast halves a DCGAN step;
torch.compile costs 25-45 s to compile and gains nothing at MNIST size, so it is opt-in.
"""
from __future__ import annotations

import time

import lightning as L
import torch

from dcgan_lab.errors import ConfigError


class ChannelsLast(L.Callback):
    """Puts G and D in channels_last memory format; conv outputs (and so fakes) follow it.

    oneDNN (CPU) and cuDNN (GPU) pick their NHWC kernels when a conv's weight is channels_last,
    so NCHW batches from the data path need no conversion.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.enabled:
            pl_module.to(memory_format=torch.channels_last)


class Compile(L.Callback):
    """torch.compile G and D in place (`nn.Module.compile`): state_dict keys and checkpoints are unchanged.

    On CUDA two combinations are refused with one line (torch 2.11, H200): channels_last weights crash in the
    compiled convolution backward, and mode=reduce-overhead's own CUDA graphs overwrite G's output, which the
    step uses again after D's update. The lab's captured step (training.cuda_graph) is the GPU speed path.
    """

    def __init__(self, enabled: bool = False, mode: str | None = None, dynamic: bool = False):
        self.enabled, self.mode, self.dynamic = enabled, mode, dynamic

    def refusal(self, device_type: str, channels_last: bool) -> str | None:
        """Why this compile setting cannot run on `device_type`, or None."""
        if device_type != "cuda":
            return None
        if self.mode == "reduce-overhead":
            return ("callbacks.compile.mode=reduce-overhead does not work with the GAN step on CUDA (its CUDA graphs "
                    "overwrite G's output, which G's update reuses); leave compile off: training.cuda_graph=true "
                    "records the whole step instead")
        if channels_last:
            return ("callbacks.compile.enabled=true with channels_last crashes in the compiled convolution backward "
                    "on CUDA; set callbacks.channels_last.enabled=false, or leave compile off (training.cuda_graph=true "
                    "is the faster GPU path)")
        return None

    def on_fit_start(self, trainer, pl_module) -> None:
        if not self.enabled:
            return
        channels_last = any(c.enabled for c in trainer.callbacks if isinstance(c, ChannelsLast))
        problem = self.refusal(pl_module.device.type, channels_last)
        if problem is not None:
            raise ConfigError(problem)
        for network in (pl_module.generator, pl_module.discriminator):
            network.compile(mode=self.mode, dynamic=self.dynamic)


class Throughput(L.Callback):
    """Training images per second after the first `warmup` batches, logged once per trained epoch, at its end:

    - `perf/images_per_s`: over the time spent inside epochs (from each epoch's start, data loading included,
      to its last batch): the speed of the step and the data path, what an ablation (attention, a penalty)
      changes. The epoch-end work of other callbacks is left out: this callback comes first in
      conf/callbacks/default.yaml, so its clock stops before theirs run.
    - `perf/wall_images_per_s`: over the wall time since warm-up, with sample grids, checkpoints and metric
      evaluations: what a run costs (make bench compares it with a plain loop). Recorded at each epoch's end
      (so up to the epochs before it) and once more when training ends, counting the last epoch's end work:
      that last value is the run's.
    - `train_time_s`: the run's wall seconds since training started (evaluations and checkpoints of earlier epochs
      included, this epoch's end work not yet) when each epoch ended (a resume's earlier parts included, as
      status.json's total does), in a row with the epoch's index: what `report --seconds` reads to compare
      variants at equal time.

    The device is synchronised only where the clock is read (twice an epoch), never per step.
    """

    def __init__(self, warmup: int = 5):
        self.warmup = warmup
        self.images, self._seen = 0, 0
        self._warm_since: float | None = None  # the clock when warm-up ended
        self._epoch_since: float | None = None  # the clock when the current epoch's timed part began
        self._in_epochs_s = 0.0
        self._images_recorded = 0

    def _now(self, pl_module) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._warm_since is not None:
            self._epoch_since = self._now(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._warm_since is None and self._seen == self.warmup:
            self._warm_since = self._epoch_since = self._now(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._seen += 1
        if self._warm_since is not None:
            self.images += len(batch[0])

    @property
    def images_per_s(self) -> float:
        return self._value

    def _record(self, trainer, pl_module, now: float, wall_only: bool = False) -> None:
        """The rates up to `now` (a clock read after the device finished)."""
        if self._warm_since is None or not self.images:
            return
        rates = {"perf/wall_images_per_s": self.images / (now - self._warm_since)}
        if not wall_only:
            if self._epoch_since is not None:
                self._in_epochs_s += now - self._epoch_since
                self._epoch_since = None
            self._value = self.images / self._in_epochs_s
            rates["perf/images_per_s"] = self._value
            self._images_recorded = self.images
        for name, value in rates.items():
            trainer.callback_metrics[name] = torch.tensor(value, dtype=torch.float64)  # as logged (status.json)
        for logger in trainer.loggers:
            logger.log_metrics(rates, step=trainer.global_step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # One clock read after the epoch's work is done: the rates' and the run's time (module.train_time_s).
        self._record(trainer, pl_module, self._now(pl_module))
        row = {"train_time_s": pl_module.train_time_s, "epoch": trainer.current_epoch}
        for logger in trainer.loggers:
            logger.log_metrics(row, step=trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        # Lightning ends a fit with an epoch end, which recorded the epochs' rate; a stop inside an epoch did not.
        self._record(trainer, pl_module, self._now(pl_module), wall_only=self.images == self._images_recorded)
