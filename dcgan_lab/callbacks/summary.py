"""The networks of a run, once at its start: what an architecture ablation costs in parameters and compute."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from torch.utils.flop_counter import FlopCounterMode

from dcgan_lab.nets.contract import evaluating

log = logging.getLogger(__name__)


def forward_flops(network: torch.nn.Module, *inputs) -> tuple[int, torch.Tensor]:
    """FLOPs of one forward (torch's counter: a multiply-add is 2) and its output. In eval mode and without
    gradients, so BatchNorm's running statistics and spectral norm's power iteration do not move."""
    with evaluating(network), torch.no_grad(), FlopCounterMode(display=False) as counter:
        output = network(*inputs)
    return counter.get_total_flops(), output


@contextlib.contextmanager
def at_full_size(*networks):
    """Growing networks (progressive) at their final resolution for the block, then back where they were."""
    growing = [(n, n.resolution, float(n.alpha)) for n in networks if hasattr(n, "grow")]
    for network, _, _ in growing:
        network.grow(network.image_size, 1.0)
    try:
        yield
    finally:
        for network, resolution, alpha in growing:
            network.grow(resolution, alpha)


@dataclass
class Part:
    """One child of the module: its parameters and, for G and D, one image's forward."""

    kind: str
    params: int
    trainable: int
    flops_per_image: float | None = None
    output: tuple[int, ...] | None = None


def measure(pl_module) -> dict[str, Part]:
    """Every child of the module that holds parameters; G and D's forward counted on two zero inputs, at the final
    resolution of a growing model (its cost once grown)."""
    g, d = pl_module.generator, pl_module.discriminator
    batch = 2
    labels = torch.zeros(batch, dtype=torch.long, device=pl_module.device) if pl_module.num_classes else None
    extra = () if labels is None else (labels,)
    with at_full_size(g, d):
        g_flops, images = forward_flops(g, torch.zeros(batch, g.latent_dim, device=pl_module.device), *extra)
        d_flops, logits = forward_flops(d, images, *extra)
    forwards = {"generator": (g_flops / batch, tuple(images.shape[1:])),
                "discriminator": (d_flops / batch, tuple(logits.shape[1:]))}
    parts = {}
    for name, child in pl_module.named_children():
        params = sum(p.numel() for p in child.parameters())
        if params:
            trainable = sum(p.numel() for p in child.parameters() if p.requires_grad)
            parts[name] = Part(type(child).__name__, params, trainable, *forwards.get(name, (None, None)))
    return parts


def table(parts: dict[str, Part]) -> list[str]:
    rows = [("", "type", "params", "trainable", "FLOPs/image", "output")]
    for name, part in parts.items():
        rows.append((name, part.kind, get_human_readable_count(part.params), get_human_readable_count(part.trainable),
                     "-" if part.flops_per_image is None else get_human_readable_count(int(part.flops_per_image)),
                     "-" if part.output is None else "x".join(map(str, part.output)) or "1"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in rows]


def costs(parts: dict[str, Part]) -> dict[str, float]:
    """The scalars a sweep's report compares: cost/g_params, cost/g_flops (one image's forward), cost/d_..."""
    return {f"cost/{short}_{what}": float(value) for name, short in (("generator", "g"), ("discriminator", "d"))
            for what, value in (("params", parts[name].params), ("flops", parts[name].flops_per_image))}


class NetworkSummary(L.Callback):
    """The networks' table, logged at setup (console and train.log): each part of the module with its parameters,
    and for G and D the FLOPs of one image's forward pass and the shape it returns. `setup` runs before the
    networks move to the device, are compiled or captured, so counting costs a CPU forward of two zero inputs and
    draws no random numbers. In place of Lightning's summary, which counts FLOPs only from an
    `example_input_array` (it printed 0).

    The cost/* scalars (costs()) go to the loggers once, at a run's first step: metrics.csv, the dashboards and a
    sweep's report (what a variant costs against its baseline). A resumed run has them from its start."""

    def __init__(self):
        self.parts: dict[str, Part] = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.global_rank == 0 and stage == "fit":
            self.parts = measure(pl_module)
            log.info("networks:\n%s", "\n".join(table(self.parts)))

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.parts and trainer.ckpt_path is None:  # (a resumed run's step is restored only after this hook)
            for logger in trainer.loggers:
                logger.log_metrics(costs(self.parts), step=0)
