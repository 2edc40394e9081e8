"""Learning-rate schedules over G steps. Each takes (optimizer, total_steps) and returns a LambdaLR."""
from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR


def constant(optimizer, total_steps: int) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: 1.0)


def linear_decay(optimizer, total_steps: int, start_fraction: float = 0.5) -> LambdaLR:
    # Constant for the first `start_fraction` of training, then linear to 0 (CycleGAN / BigGAN style).
    start = int(start_fraction * total_steps)
    span = max(total_steps - start, 1)
    return LambdaLR(optimizer, lambda step: 1.0 if step < start else max(0.0, 1.0 - (step - start) / span))


def cosine(optimizer, total_steps: int, min_factor: float = 0.0) -> LambdaLR:
    def factor(step: int) -> float:
        progress = min(step / max(total_steps, 1), 1.0)
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def cyclic(optimizer, total_steps: int, period: int = 2000, min_factor: float = 0.1) -> LambdaLR:
    # Triangular cycles between min_factor*lr and lr (Smith 2017); CyclicLR would also cycle Adam's betas.
    def factor(step: int) -> float:
        phase = (step % period) / period
        return min_factor + (1 - min_factor) * (1 - abs(2 * phase - 1))

    return LambdaLR(optimizer, factor)
