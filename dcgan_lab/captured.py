"""The whole GAN step on fixed buffers, captured once as a CUDA graph and replayed for every batch.

At DCGAN sizes a GPU step is launch- and Python-bound: G's and D's forwards and backwards, two optimizer
updates and the EMA each launch their kernels from Python, and the GPU idles in between. After a few warm-up
batches, `StaticStep` records the step with `torch.cuda.graph`: the latent and label draws, D's and G's losses
and penalties, both backwards, clipping, the divergence guard's checks (callbacks' `on_before_optimizer_step`,
which must be device-only), both optimizer updates and the EMA update. Each batch then costs one copy into the
input buffer and one replay. Lightning still drives epochs, checkpoints, callbacks and logging; what changes
from step to step (the batch, the instance-noise std, the EMA decay, the learning rates) lives in device
buffers that the graph reads.

Up to four graphs are recorded: D's update alone and D's then G's (n_critic > 1 alternates them), each with
and without instance noise (its annealing ends at 0, where the eager step stops drawing it). Options the
capture does not cover keep Lightning's eager step, named in one info line (`capture_blockers`). Checkpoints
hold optimizer states in the portable eager form (`portable_optimizer_states`), so captured and eager runs
resume each other. Without `capture` the same step runs eagerly: that is how it is tested on CPUs.
"""
from __future__ import annotations

import contextlib

import torch
from lightning.pytorch.trainer import call
from torch import Tensor, nn

from dcgan_lab.nets.ema import ema_update

# Eager batches before the capture: cuBLAS/cuDNN handles, the autograd engine and the optimizers' lazy state
# must exist before recording (Adam's state created inside a graph would be re-zeroed on every replay).
WARMUP_BATCHES = 3


def capture_blockers(module, trainer) -> list[str]:
    """The options of this run that keep its step from being captured (empty: it can be)."""
    blockers = []
    if trainer.world_size > 1:
        blockers.append("DDP (the gradient all-reduce runs in Lightning's backward)")
    if module.accumulate > 1:
        blockers.append("training.accumulate > 1")
    if module.growth is not None:
        blockers.append("progressive growing (the networks change shape)")
    if "16" in str(trainer.precision) and "bf16" not in str(trainer.precision):
        blockers.append(f"trainer.precision={trainer.precision} (a gradient scaler)")
    for optimizer in trainer.optimizers:
        if "capturable" not in optimizer.defaults and not isinstance(optimizer, torch.optim.SGD):
            blockers.append(f"optimizer {type(optimizer).__name__} (not capturable)")
    if any(getattr(c, "enabled", False) and type(c).__name__ == "Compile" for c in trainer.callbacks):
        blockers.append("callbacks.compile.enabled=true")
    return blockers


def portable_optimizer_states(states: list[dict]) -> list[dict]:
    """Optimizer state dicts as an eager optimizer on any device writes them: float learning rates,
    `capturable` off, step counters on the CPU. A captured run's checkpoints then resume anywhere.
    New dicts: a state_dict shares its per-parameter dicts with the live optimizer."""

    def group(g: dict) -> dict:
        g = dict(g)
        if isinstance(g.get("lr"), Tensor):
            g["lr"] = float(g["lr"])
        if g.get("capturable"):
            g["capturable"] = False
        return g

    def param_state(state: dict) -> dict:
        step = state.get("step")
        return {**state, "step": step.detach().to("cpu", torch.float32)} if isinstance(step, Tensor) else state

    return [{**s, "param_groups": [group(g) for g in s.get("param_groups", [])],
             "state": {k: param_state(v) for k, v in s.get("state", {}).items()}} for s in states]


def make_capturable(optimizers, device: torch.device, scheduled: bool) -> list[Tensor]:
    """Switch optimizers to the arithmetic a graph can record: `capturable` (step counters and bias corrections
    as float32 device tensors, not float64 host scalars) and, when a schedule changes them between replays, the
    learning rates as device buffers (returned). A constant learning rate stays a float: a kernel argument, and
    nothing for the LR monitor to read back from the device."""
    buffers = []
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            if "capturable" in group:
                group["capturable"] = True
            if scheduled:
                group["lr"] = torch.tensor(float(group["lr"]), device=device)
                buffers.append(group["lr"])
        for state in optimizer.state.values():
            if isinstance(state.get("step"), Tensor):
                state["step"] = state["step"].to(device, torch.float32)
    return buffers


class StaticStep:
    """One D step (and a G step on G's turns) on fixed input buffers; replayed from CUDA graphs when `capture`.

    `__call__(real, labels, g_turn)` runs the batch and returns the step's scalars as device tensors (rewritten
    by the next batch): loss/d, D(x), D(G(z)), grad_norm/d, and after G's turns loss/g, grad_norm/g; the
    objective's `penalty/*` of each network's turn.
    """

    def __init__(self, module, capture: bool):
        self.module, self.capture = module, capture
        self.real: Tensor | None = None
        self.graphs: dict[tuple[bool, bool], torch.cuda.CUDAGraph] = {}  # (G's turn, noise on)
        self.outputs: dict[str, Tensor] = {}

    # ---- buffers and optimizers ------------------------------------------------------------
    def _raw_optimizers(self):
        return self.module.optimizers(use_pl_optimizer=False)

    def _prepare(self, real: Tensor, labels: Tensor) -> None:
        device = real.device
        self.real, self.labels = torch.empty_like(real), torch.empty_like(labels)
        self.sigma = torch.zeros((), device=device)
        self.beta = torch.zeros((), device=device)
        penalties = self.module.objective.penalty_names
        names = ("loss/d", "D(x)", "D(G(z))", "grad_norm/d", "loss/g", "grad_norm/g", *penalties["d"], *penalties["g"])
        self.outputs = {name: torch.zeros((), device=device) for name in names}
        self.graphs, self.eager_runs = {}, {False: 0, True: 0}
        self.lr_tensors = make_capturable(self._raw_optimizers(), device, bool(self.module._schedulers())) if self.capture else []
        self.recorded_for = self._optimizer_identity()

    def _optimizer_identity(self) -> list:
        """What a recorded graph is bound to: each optimizer's state and param-group objects (held, so compared
        by identity), and the float learning rates. A rollback (load_state_dict) replaces the objects, a
        learning-rate cut the floats."""
        return [(o.state, [(g, None if isinstance(g["lr"], Tensor) else g["lr"]) for g in o.param_groups])
                for o in self._raw_optimizers()]

    def _reloaded(self) -> bool:
        """True when the optimizers changed under the graphs (a divergence rollback): prepare and record again."""
        if not self.capture:
            return False
        now, then = self._optimizer_identity(), self.recorded_for
        return len(now) != len(then) or any(
            state is not old_state or len(groups) != len(old_groups)
            or any(g is not old_g or lr != old_lr for (g, lr), (old_g, old_lr) in zip(groups, old_groups))
            for (state, groups), (old_state, old_groups) in zip(now, then))

    def sync_learning_rates(self) -> None:
        """After a scheduler step: a schedule that assigned a float learning rate writes it into the buffer."""
        groups = [g for optimizer in self._raw_optimizers() for g in optimizer.param_groups]
        for group, buffer in zip(groups, self.lr_tensors):
            if group["lr"] is not buffer:
                buffer.fill_(float(group["lr"]))
                group["lr"] = buffer

    # ---- the step ----------------------------------------------------------------------------
    def _before_update(self, optimizer, network: nn.Module, name: str) -> None:
        module = self.module
        grads = [p.grad.detach() for p in network.parameters() if p.grad is not None]
        self.outputs[f"grad_norm/{name}"].copy_(torch.stack(torch._foreach_norm(grads)).norm())  # pre-clip, as eager
        if module.grad_clip:
            nn.utils.clip_grad_norm_(network.parameters(), module.grad_clip, foreach=True)
        call._call_callback_hooks(module.trainer, "on_before_optimizer_step", optimizer)

    def _step(self, g_turn: bool, sigma, beta) -> None:
        """The eager step on the input buffers; the same calls, in the same order, as GANModule.training_step."""
        module, objective, out = self.module, self.module.objective, self.outputs
        opt_d, opt_g = self._raw_optimizers()
        real = self.real
        real_y = self.labels if module.num_classes else None
        fake_y = module.sample_labels(len(real))
        with torch.set_grad_enabled(g_turn):  # G keeps its graph only when it steps on this batch
            fake = module._g(module.generator.sample_latent(len(real), real.device), fake_y)
        opt_d.zero_grad(set_to_none=True)
        loss_d, stats = objective.d_loss(module.discriminator, real, fake, real_y, fake_y, module.g_step, sigma=sigma)
        loss_d.backward()
        self._before_update(opt_d, module.discriminator, "d")
        opt_d.step()
        for name, value in {"loss/d": loss_d.detach(), **stats}.items():
            out[name].copy_(value)
        if g_turn:
            opt_g.zero_grad(set_to_none=True)
            loss_g, stats = objective.g_loss(module.discriminator, real, fake, real_y, fake_y, module.g_step, sigma=sigma)
            loss_g.backward(inputs=module.g_backward_inputs())
            self._before_update(opt_g, module.generator, "g")
            opt_g.step()
            if module.ema is not None:
                ema_update(module.generator_ema, module.generator, beta)
            for name, value in {"loss/g": loss_g.detach(), **stats}.items():
                out[name].copy_(value)

    def _autocast(self):
        # Inside a graph, autocast must not reuse casts made outside it (they would go stale).
        device = self.real.device.type
        if torch.is_autocast_enabled(device):
            return torch.autocast(device, dtype=torch.get_autocast_dtype(device), cache_enabled=False)
        return contextlib.nullcontext()

    def _step_arguments(self, noisy: bool) -> tuple:
        """(sigma, beta) for `_step`: the device buffers where their option acts; a plain 0 where it does not, so
        the step draws no instance noise the eager step would not draw (the random streams stay the eager ones)."""
        return (self.sigma if noisy else 0.0, self.beta if self.module.ema is not None else 0.0)

    def _record(self, g_turn: bool, noisy: bool) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA calls of other threads (a progress bar, a data loader's pinning) do not void the capture
        with self._autocast(), torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._step(g_turn, *self._step_arguments(noisy))
        return graph

    def __call__(self, real: Tensor, labels: Tensor, g_turn: bool) -> dict[str, Tensor]:
        module = self.module
        if self.real is None or self._reloaded():
            self._prepare(real, labels)
        self.real.copy_(real)
        self.labels.copy_(labels)
        objective = module.objective
        # Host values written into device buffers (a fill is a kernel argument, not a read): the graph reads them.
        sigma = objective.noise_sigma(module.g_step) if objective.instance_noise else 0.0
        self.sigma.fill_(sigma)
        self.beta.fill_(module.ema.beta(module.g_step) if module.ema is not None else 0.0)
        noisy = sigma > 0  # annealed instance noise ends: from then on a graph without its draws
        if not self.capture:  # the same step and buffers, eagerly (CPUs; the CPU tests pin it)
            self._step(g_turn, *self._step_arguments(noisy))
            return self.outputs
        warm = self.eager_runs[g_turn] >= WARMUP_BATCHES and self.eager_runs[True] >= 1
        if not warm:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._step(g_turn, *self._step_arguments(noisy))
            torch.cuda.current_stream().wait_stream(side)
            self.eager_runs[g_turn] += 1
            return self.outputs
        if (g_turn, noisy) not in self.graphs:
            self.graphs[g_turn, noisy] = self._record(g_turn, noisy)
        self.graphs[g_turn, noisy].replay()
        return self.outputs
