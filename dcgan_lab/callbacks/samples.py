"""Sample grids from the run's fixed latents: comparable across epochs, resumptions and runs; and the walk
between pairs of them at the end (the DCGAN paper's "walking in the latent space")."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from dcgan_lab.data.datamodule import to_uint8
from dcgan_lab.atomic import replaced_atomically
from dcgan_lab.loggers import dashboard_step, show_animation, write_png_and_show


def uint8_grid(images: torch.Tensor, nrow: int, padding: int = 2) -> torch.Tensor:
    """(N, C, H, W) images in [-1, 1] -> (rows, cols, 3) uint8 grid on their own device: torchvision's
    make_grid(normalize=True, value_range=(-1, 1)) + save_image pixels, without the host doing the float work
    (on a GPU only the finished uint8 grid is copied back)."""
    n, channels, h, w = images.shape
    pixels = to_uint8(images)
    pixels = pixels.expand(n, 3, h, w) if channels == 1 else pixels
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    # Each tile: the image with `padding` zero rows/columns above and to its left; the grid closes right/below.
    tiles = pixels.new_zeros(rows * cols, 3, h + padding, w + padding)
    tiles[:n, :, padding:, padding:] = pixels
    grid = tiles.view(rows, cols, 3, h + padding, w + padding).permute(0, 3, 1, 4, 2)
    grid = grid.reshape(rows * (h + padding), cols * (w + padding), 3)
    return F.pad(grid.permute(2, 0, 1), (0, padding, 0, padding)).permute(1, 2, 0)


def captioned_rows(grid: torch.Tensor, names: list[str], padding: int = 2, longest: int = 24) -> torch.Tensor:
    """`uint8_grid`'s (H, W, 3) grid of one row per class with a strip on its left that names each row's class
    (white on black, names over `longest` characters cut): 27 WikiArt styles read as styles, not as row numbers."""
    font = ImageFont.load_default()
    shown = [name if len(name) <= longest else name[: longest - 2] + ".." for name in names]
    height = grid.shape[0]
    row = (height - padding) // len(names)  # each row: `padding` above its images, then the images
    width = max(int(font.getlength(name)) for name in shown) + 2 * padding + 4
    strip = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(strip)
    for r, name in enumerate(shown):
        draw.text((padding + 2, padding + r * row + row // 2), name, fill=(255, 255, 255), font=font, anchor="lm")
    return torch.cat([torch.from_numpy(np.array(strip)), grid.cpu()], dim=1)


def interpolate(start: torch.Tensor, end: torch.Tensor, t: torch.Tensor, spherical: bool = True) -> torch.Tensor:
    """(R, D) start and end latents at fractions t (S,) of the way -> (R, S, D); t = 0 and 1 give them exactly.

    Straight lines (spherical=False; Radford et al. 2016) cut through the low-norm interior of a Gaussian latent
    space, where G saw no training latents: their midpoints have norm |z|/sqrt(2) for orthogonal ends. Spherical
    interpolation (White 2016) follows the great circle instead, and keeps the norm when the ends share it:
        slerp(a, b; t) = sin((1 - t) w) / sin w * a + sin(t w) / sin w * b,   w = angle(a, b)
    """
    t = t.to(start).view(1, -1, 1)
    a, b = start.unsqueeze(1), end.unsqueeze(1)
    if not spherical:
        return (1 - t) * a + t * b
    w = torch.acos(F.cosine_similarity(start, end, dim=-1).clamp(-1, 1)).view(-1, 1, 1)
    sin_w = torch.sin(w)
    parallel = sin_w < 1e-6  # the great circle is undefined; the straight line is the same path
    sin_w = torch.where(parallel, torch.ones_like(sin_w), sin_w)
    weight_a = torch.where(parallel, 1 - t, torch.sin((1 - t) * w) / sin_w)
    weight_b = torch.where(parallel, t, torch.sin(t * w) / sin_w)
    return weight_a * a + weight_b * b


def walk_latents(fixed_z: torch.Tensor, fixed_labels: torch.Tensor | None, rows: int, steps: int,
                 spherical: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(rows' * steps, D) latents of the walk grid and their labels: row r runs from one fixed latent to the next
    in `steps` steps, so its ends are samples of the grid. Unconditional: latents 2r -> 2r + 1 (up to `rows`
    rows). Conditional (the fixed latents sorted by class, as in the grid): one row per class, from its first
    latent to its second, every step drawn with that class's label."""
    n = len(fixed_z)
    if fixed_labels is None:
        first = torch.arange(min(rows, max(n // 2, 1))) * 2
    else:
        classes = int(fixed_labels.max()) + 1
        first = torch.arange(classes) * (n // classes)
    first = first.to(fixed_z.device)
    path = interpolate(fixed_z[first], fixed_z[(first + 1) % n], torch.linspace(0, 1, steps), spherical)
    labels = None if fixed_labels is None else fixed_labels[first].repeat_interleave(steps)
    return path.flatten(0, 1), labels


def walk_grid(sample: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor], fixed_z: torch.Tensor,
              fixed_labels: torch.Tensor | None, rows: int = 8, steps: int = 10, spherical: bool = True) -> torch.Tensor:
    """The uint8 grid of `sample(latents, labels)` (images in [-1, 1]) along `walk_latents`: one walk a row."""
    z, labels = walk_latents(fixed_z, fixed_labels, rows, steps, spherical)
    return uint8_grid(sample(z, labels), nrow=steps)


def save_png(grid: torch.Tensor, path) -> None:
    # zlib level 1: a third of the default's time for a few percent more bytes (it runs on the training thread)
    Image.fromarray(grid.cpu().numpy()).save(path, format="PNG", compress_level=1)


def epoch_of(grid_file: Path) -> int:
    return int(grid_file.stem.split("_")[1])  # samples/epoch_0003.png -> 3


def progress_gif(grid_files: list[Path], path: Path, frame_ms: int = 250, last_frame_ms: int = 2000,
                 max_frames: int = 100) -> None:
    """The epoch grids as one looping GIF: G's progression on the fixed latents, each frame captioned with its
    epoch in a strip below the grid. At most `max_frames`, evenly spread, the last always kept; frames of other
    sizes (a progressive model's earlier resolutions) scaled to the last one's with nearest neighbours.
    Grayscale grids stay exact (a 256-grey palette); colour grids are quantised to GIF's 256 colours."""
    if len(grid_files) > max_frames:
        picks = sorted({round(i * (len(grid_files) - 1) / (max_frames - 1)) for i in range(max_frames)})
        grid_files = [grid_files[i] for i in picks]
    grids = []
    for grid_file in grid_files:
        with Image.open(grid_file) as image:
            grids.append(image.convert("RGB"))
    size = grids[-1].size
    grey = all(_is_grey(g) for g in grids)
    font = ImageFont.load_default()
    strip = 16
    frames = []
    for grid_file, grid in zip(grid_files, grids):
        frame = Image.new("RGB", (size[0], size[1] + strip))
        frame.paste(grid if grid.size == size else grid.resize(size, Image.Resampling.NEAREST), (0, 0))
        ImageDraw.Draw(frame).text((4, size[1] + 2), f"epoch {epoch_of(grid_file)}", fill=(255, 255, 255), font=font)
        frames.append(frame.convert("L") if grey else frame.quantize(256))
    durations = [frame_ms] * (len(frames) - 1) + [last_frame_ms]
    with replaced_atomically(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                       optimize=False)


def _is_grey(image: Image.Image) -> bool:
    red, green, blue = image.split()
    return red.tobytes() == green.tobytes() == blue.tobytes()


class SampleGrid(L.Callback):
    """Writes `samples/epoch_XXXX.png` every `every_n_epochs` and `samples/last.png` at the end of training,
    with `samples/interpolation.png` beside it: G along the latent path between pairs of the fixed latents
    (`walk_latents`; `walk_rows=0` turns it off). A smooth walk says G maps the latent space continuously; sharp
    jumps with near copies in between are a sign of memorised samples (Radford et al. 2016, section 6.1).

    Conditional models: one row per class (row k shows label k), named in a strip on the left where the data
    names its classes (an image folder's subfolders: `captioned_rows`). Progressive models: grids are at the
    current resolution, and `samples/res_XXX.png` is written as each resolution's phase ends.
    At the end, `samples/progress.gif` plays the run's epoch grids in order (`progress_gif`; `animation=false`
    turns it off), including those written before a resume.

    Dashboards (W&B, TensorBoard) show these files: epoch grids and last.png under `samples`, each
    resolution's grid under `samples/res_XXX`, the walk under `samples/interpolation`; both also play the GIF
    under `samples/progress`.
    """

    def __init__(self, output_dir: str, every_n_epochs: int = 1, nrow: int = 8, walk_rows: int = 8,
                 walk_steps: int = 10, spherical: bool = True, animation: bool = True):
        self.dir = Path(output_dir) / "samples"
        self.every_n_epochs, self.nrow = every_n_epochs, nrow
        self.walk_rows, self.walk_steps, self.spherical = walk_rows, walk_steps, spherical
        self.animation = animation
        self._last_epoch_drawn: int | None = None  # this fit's: grids after it are from an abandoned timeline
        self._epoch_in_progress = 0  # the end's captions: Lightning has counted past the last epoch by then
        self._class_names: list[str] | None = None  # row captions of conditional grids (datamodule.class_names)

    def on_fit_start(self, trainer, pl_module) -> None:
        names = getattr(trainer.datamodule, "class_names", None)  # an image folder's class folders
        self._class_names = names if names and len(names) == pl_module.num_classes else None
        if trainer.is_global_zero:
            self.dir.mkdir(parents=True, exist_ok=True)
            torch.save(pl_module.fixed_z.cpu(), self.dir.parent / "fixed_noise.pt")

    def grid(self, pl_module) -> torch.Tensor:
        labels = getattr(pl_module, "fixed_labels", None)
        images = pl_module.sample(pl_module.fixed_z, labels)
        nrow = pl_module.samples_per_class if labels is not None else self.nrow
        return uint8_grid(images, nrow=nrow)

    def _write(self, trainer, pl_module, name: str, key: str = "samples", in_batch_end: bool = False,
               grid: torch.Tensor | None = None) -> Path:
        grid = self.grid(pl_module) if grid is None else grid
        if self._class_names is not None:  # conditional grids and walks: one row per class, named
            grid = captioned_rows(grid, self._class_names)
        caption = f"samples/{name}, epoch {self._epoch_in_progress}"
        return write_png_and_show(self.dir / name, lambda tmp: save_png(grid, tmp), trainer.loggers, key,
                                  step=dashboard_step(trainer, in_batch_end), caption=caption)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_in_progress = trainer.current_epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._write(trainer, pl_module, f"epoch_{trainer.current_epoch:04d}.png")
            self._last_epoch_drawn = trainer.current_epoch

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
            if self.walk_rows:
                grid = walk_grid(pl_module.sample, pl_module.fixed_z, getattr(pl_module, "fixed_labels", None),
                                 self.walk_rows, self.walk_steps, self.spherical)
                self._write(trainer, pl_module, "interpolation.png", key="samples/interpolation", grid=grid)
            if getattr(pl_module, "growth_state", None) is not None:
                resolution = pl_module.growth_state[0]
                self._write(trainer, pl_module, f"res_{resolution:03d}.png", key=f"samples/res_{resolution:03d}")
            if self.animation:
                self._write_progress(trainer)

    def _write_progress(self, trainer) -> None:
        # A run resumed from an earlier checkpoint may leave later grids of the first attempt behind: not played.
        last = self._last_epoch_drawn
        grids = sorted((f for f in self.dir.glob("epoch_[0-9][0-9][0-9][0-9].png") if last is None or epoch_of(f) <= last),
                       key=epoch_of)
        if len(grids) > 1:
            progress_gif(grids, self.dir / "progress.gif")
            show_animation(trainer.loggers, "samples/progress", self.dir / "progress.gif",
                           step=dashboard_step(trainer, False), caption=f"epochs {epoch_of(grids[0])}-{epoch_of(grids[-1])}")
