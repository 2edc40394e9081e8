"""Exponential moving average of G's weights (Karras et al. 2018; Yazici et al. 2019).

ema <- beta * ema + (1 - beta) * G after every G step, with beta ramped up from 0 over the first
`warmup_steps` G steps (beta_t = decay * min(1, t / warmup_steps)), so early averages do not drag in the
random initialisation. Buffers (BatchNorm statistics, progressive resolution/alpha) are copied, not averaged.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def sampling_generator(generator: nn.Module, generator_ema: nn.Module | None) -> nn.Module:
    """The generator that samples, grids and metrics use: the EMA copy when there is one, else G itself."""
    return generator_ema if generator_ema is not None else generator


def make_ema(generator: nn.Module) -> nn.Module:
    """A frozen copy of G, in eval mode: it is only ever sampled from."""
    ema = copy.deepcopy(generator).eval()
    ema.requires_grad_(False)
    return ema


def ema_beta(decay: float, g_step: int, warmup_steps: int) -> float:
    if warmup_steps <= 0:
        return decay
    return decay * min(1.0, g_step / warmup_steps)


@torch.no_grad()
def ema_update(ema: nn.Module, generator: nn.Module, beta: float | torch.Tensor) -> None:
    """`beta` may be a device tensor (a captured step's buffer: the decay ramps up between replays)."""
    ema_params = [p for _, p in ema.named_parameters()]
    params = [p.detach() for _, p in generator.named_parameters()]
    if isinstance(beta, torch.Tensor):
        # ema += (1 - beta) * (p - ema)
        steps = torch._foreach_sub(params, ema_params)
        torch._foreach_mul_(steps, 1 - beta)
        torch._foreach_add_(ema_params, steps)
    else:
        # ema + (1 - beta) * (p - ema) == beta * ema + (1 - beta) * p
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)
    for ema_buffer, buffer in zip(ema.buffers(), generator.buffers()):
        ema_buffer.copy_(buffer)


class EmaSchedule:
    """The EMA settings (model.ema_decay, model.ema_warmup_steps); decay 0 turns the EMA generator off."""

    def __init__(self, decay: float = 0.0, warmup_steps: int = 0):
        self.decay, self.warmup_steps = decay, warmup_steps

    def beta(self, g_step: int) -> float:
        return ema_beta(self.decay, g_step, self.warmup_steps)
