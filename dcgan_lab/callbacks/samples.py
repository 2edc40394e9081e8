"""Sample grids from the run's fixed latents: comparable across epochs, resumptions and runs."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torchvision.utils import make_grid, save_image

from dcgan_lab.loggers import dashboard_step, write_png_and_show


class SampleGrid(L.Callback):
    """Writes `samples/epoch_XXXX.png` every `every_n_epochs` and `samples/last.png` at the end of training.

    Conditional models: one row per class (row k shows label k). Progressive models: grids are at the
    current resolution, and `samples/res_XXX.png` is written as each resolution's phase ends.
    Dashboards (W&B, TensorBoard) show these files: epoch grids and last.png under `samples`, each
    resolution's grid under `samples/res_XXX`.
    """

    def __init__(self, output_dir: str, every_n_epochs: int = 1, nrow: int = 8):
        self.dir = Path(output_dir) / "samples"
        self.every_n_epochs, self.nrow = every_n_epochs, nrow

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.dir.mkdir(parents=True, exist_ok=True)
            torch.save(pl_module.fixed_z.cpu(), self.dir.parent / "fixed_noise.pt")

    def grid(self, pl_module) -> torch.Tensor:
        labels = getattr(pl_module, "fixed_labels", None)
        images = pl_module.sample(pl_module.fixed_z, labels)
        nrow = pl_module.samples_per_class if labels is not None else self.nrow
        return make_grid(images.cpu(), nrow=nrow, normalize=True, value_range=(-1, 1), padding=2)

    def _write(self, trainer, pl_module, name: str, key: str = "samples", in_batch_end: bool = False) -> Path:
        grid = self.grid(pl_module)
        caption = f"samples/{name}, epoch {trainer.current_epoch}"
        return write_png_and_show(self.dir / name, lambda tmp: save_image(grid, tmp), trainer.loggers, key,
                                  step=dashboard_step(trainer, in_batch_end), caption=caption)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._write(trainer, pl_module, f"epoch_{trainer.current_epoch:04d}.png")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = getattr(pl_module, "growth_state", None)
        if now is None or not trainer.is_global_zero:
            return
        upcoming = pl_module.next_growth_state()
        if upcoming[0] != now[0]:  # this batch ended the phase at resolution now[0]
            self._write(trainer, pl_module, f"res_{now[0]:03d}.png", key=f"samples/res_{now[0]:03d}", in_batch_end=True)

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._write(trainer, pl_module, "last.png")
            if getattr(pl_module, "growth_state", None) is not None:
                resolution = pl_module.growth_state[0]
                self._write(trainer, pl_module, f"res_{resolution:03d}.png", key=f"samples/res_{resolution:03d}")
