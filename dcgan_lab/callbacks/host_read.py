"""Reading device values on the host without making the training loop wait for them.

A blocking read (`.item()`, `.tolist()`, `float(t)`) empties the GPU's queue: the host stops until every
queued step has run, and the GPU then idles while the host catches up (H200, 32px, captured step: the lab
default ran 1.17x faster with the divergence guard, then a blocking read every 10 batches, left out;
benchmarks/results/cuda.md). `HostRead` starts the copy and lets the caller look again later.
"""
from __future__ import annotations

import torch

from dcgan_lab.checkpoint_io import host_copy


class HostRead:
    """A copy of `tensor` on its way to the host: `ready()` asks without waiting, `values()` waits if it must.

    On CUDA the copy goes to pinned memory behind the work already queued, and an event marks its landing. On
    a CPU the values are there at once (ready() is always true), so CPU runs act on the same batch as before.
    """

    def __init__(self, tensor: torch.Tensor):
        self._host, self._event = host_copy(tensor), None
        if tensor.is_cuda:
            self._event = torch.cuda.Event()
            self._event.record()  # after the copy, on the same stream

    def ready(self) -> bool:
        return self._event is None or self._event.query()

    def values(self) -> list:
        if self._event is not None:
            self._event.synchronize()
        return self._host.tolist()
