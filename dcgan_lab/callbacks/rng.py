"""Random-number state that travels with checkpoints, so a resumed run draws the same noise and
the same data order as one that was never interrupted."""
from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch


def capture_rng() -> dict:
    """Every RNG the training loop draws from, in types `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RngState(L.Callback):
    """Saves the RNG states in each checkpoint; on resume puts them back when training starts.

    The data order follows too: the DataLoader's RandomSampler draws its seed from the torch RNG
    when each epoch begins. Under DDP every rank then re-seeds from that state plus its rank, so
    ranks draw different latents while staying reproducible.
    """

    def state_dict(self) -> dict:
        return capture_rng()

    def load_state_dict(self, state_dict: dict) -> None:
        # Lightning restores callbacks after the model is built and before it creates the first epoch's
        # DataLoader iterator (which draws the shuffle seed): the same point at which the state was saved.
        restore_rng(state_dict)

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.world_size > 1:
            base = int(torch.randint(0, 2**62, (1,)).item())  # same draw on every rank
            rank_seed = base + trainer.global_rank
            torch.manual_seed(rank_seed)
            np.random.seed(rank_seed % 2**32)
            random.seed(rank_seed)
