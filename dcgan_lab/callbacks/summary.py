"""The networks of a run, once at its start: what an architecture ablation costs in parameters and compute."""
from __future__ import annotations

import logging

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


class NetworkSummary(L.Callback):
    """Logs one table at setup (console and train.log): each part of the module with its parameters, and for G and
    D the FLOPs of one image's forward pass and the shape it returns. `setup` runs before the networks move to the
    device, are compiled or captured, so counting costs a CPU forward of two zero inputs and draws no random
    numbers. In place of Lightning's summary, which counts FLOPs only from an `example_input_array` (it printed 0)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.global_rank == 0 and stage == "fit":
            log.info("networks:\n%s", "\n".join(self.rows(pl_module)))

    @staticmethod
    def rows(pl_module) -> list[str]:
        g, d = pl_module.generator, pl_module.discriminator
        batch = 2  # BatchNorm in eval mode would take 1; 2 keeps any layer that wants a batch happy
        labels = torch.zeros(batch, dtype=torch.long, device=pl_module.device) if pl_module.num_classes else None
        z = torch.zeros(batch, g.latent_dim, device=pl_module.device)
        extra = () if labels is None else (labels,)
        g_flops, images = forward_flops(g, z, *extra)
        d_flops, logits = forward_flops(d, images, *extra)
        measured = {"generator": (g_flops / batch, tuple(images.shape[1:])),
                    "discriminator": (d_flops / batch, tuple(logits.shape[1:]))}
        table = [("", "type", "params", "trainable", "FLOPs/image", "output")]
        for name, part in pl_module.named_children():
            params = sum(p.numel() for p in part.parameters())
            if not params:
                continue
            trainable = sum(p.numel() for p in part.parameters() if p.requires_grad)
            flops, shape = measured.get(name, (None, None))
            table.append((name, type(part).__name__, get_human_readable_count(params),
                          get_human_readable_count(trainable),
                          "-" if flops is None else get_human_readable_count(int(flops)),
                          "-" if shape is None else "x".join(map(str, shape)) or "1"))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        return ["  " + "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                for row in table]
