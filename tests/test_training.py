"""Real Lightning runs of the lab: files a run leaves, G-step counting, resume, W&B offline, CLI."""
import csv
import json
import re
from pathlib import Path

import lightning as L
import pytest
import torch

from dcgan_lab.errors import DataError
from dcgan_lab.pipeline import train
from tests.conftest import progress_bar, run_cli


def read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name)]


def test_an_ema_run_prints_no_lightning_warning_about_modules_in_eval_mode(make_cfg, recwarn):
    # The EMA copy of G is frozen in eval mode by design: Lightning's "Found 16 module(s) in eval mode at the start
    # of training. This may lead to unexpected behavior" was printed by every run with model.ema_decay > 0.
    result = train(make_cfg("model.ema_decay=0.999", "trainer.limit_train_batches=2"))
    assert result["g_steps"] == 2
    assert [str(w.message) for w in recwarn if "eval mode" in str(w.message)] == []


def test_run_leaves_config_metrics_samples_checkpoint(make_cfg, tmp_path, recwarn):
    result = train(make_cfg("trainer.log_every_n_steps=1"))
    # The run folder holds config.yaml when the CSV starts: no warning that log files "will be deleted".
    assert not [w for w in recwarn if "will be deleted" in str(w.message)]
    run = Path(result["output_dir"])
    assert run == tmp_path / "run"
    assert (run / "config.yaml").read_text().count("dataset:") == 1
    for name in ("samples/last.png", "samples/epoch_0000.png", "samples/interpolation.png", "fixed_noise.pt",
                 "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    rows = read_metrics(run)
    for name in ("loss/d", "loss/g", "D(x)", "D(G(z))", "grad_norm/d", "grad_norm/g"):
        assert len(column(rows, name)) >= 3, name
    assert all(torch.isfinite(torch.tensor(column(rows, "loss/d"))))
    assert result["g_steps"] == 4
    torch.testing.assert_close(torch.load(run / "fixed_noise.pt"), torch.load(run / "checkpoints/last.ckpt")["state_dict"]["fixed_z"])


def rebuild_generator(run: Path) -> torch.nn.Module:
    """G as last.ckpt holds it (the EMA copy when the checkpoint has one), rebuilt from its config, in eval mode."""
    from hydra.utils import instantiate

    checkpoint = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    prefix = "generator_ema." if any(k.startswith("generator_ema.") for k in state) else "generator."
    generator = instantiate(checkpoint["lab_config"]["model"]["generator"])
    generator.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return generator.eval()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Channel 0 of images in [-1, 1] mapped to 0..255 as torchvision's save_image rounds them: (N, H, W)."""
    return ((images[:, 0].clamp(-1, 1) + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8)


def rebuild_tiles(run: Path, labels_per_row: bool = False) -> torch.Tensor:
    """The sample grid's images recomputed from last.ckpt and fixed_noise.pt, as uint8 (N, H, W) of channel 0.

    Independent of the lab's grid code: G in eval mode, fp32 on the CPU. A conditional grid's row k is drawn
    with label k."""
    generator = rebuild_generator(run)
    z = torch.load(run / "fixed_noise.pt", weights_only=True)
    with torch.no_grad():
        if labels_per_row:
            k = generator.num_classes
            per_row = len(z) // k
            images = torch.cat([generator(z[r * per_row:(r + 1) * per_row], torch.full((per_row,), r)) for r in range(k)])
        else:
            images = generator(z)
    return to_uint8(images)


def grid_tiles(png: Path, n: int, nrow: int, size: int) -> torch.Tensor:
    """Cut the PNG grid (padding 2) into its n tiles: uint8 (n, size, size) of channel 0."""
    import numpy as np
    from PIL import Image

    pixels = torch.from_numpy(np.array(Image.open(png).convert("RGB")))[..., 0]
    step = size + 2
    return torch.stack([pixels[2 + (i // nrow) * step: 2 + (i // nrow) * step + size, 2 + (i % nrow) * step: 2 + (i % nrow) * step + size]
                        for i in range(n)])


def assert_same_pixels(shown: torch.Tensor, expected: torch.Tensor) -> None:
    # channels_last training vs an NCHW rebuild may round a rare pixel the other way
    difference = (shown.int() - expected.int()).abs()
    assert difference.max() <= 1 and (difference > 0).float().mean() < 0.01, (difference.max(), (difference > 0).float().mean())


@pytest.mark.parametrize("overrides", [[], ["model.ema_decay=0.5", "model.ema_warmup_steps=0"]], ids=["g", "ema"])
def test_sample_grid_shows_the_fixed_noise_batch(make_cfg, overrides):
    result = train(make_cfg("training.num_samples=16", "trainer.limit_train_batches=20", "model.ngf=32",
                            "callbacks.sample_grid.walk_rows=0", *overrides))
    run = Path(result["output_dir"])
    shown = grid_tiles(run / "samples/last.png", 16, nrow=8, size=32)
    assert_same_pixels(shown, rebuild_tiles(run))
    assert shown.float().std() > 2  # the pixels vary: the comparison is not between two flat images
    assert not (run / "samples/interpolation.png").exists()  # walk_rows=0: no walk


def test_progress_gif_plays_the_epoch_grids_in_order_each_captioned(make_cfg, tmp_path):
    """samples/progress.gif: one frame per epoch grid, its pixels the grid's (grey digits: exact), a caption strip
    below naming the epoch, the last frame held longest; a run resumed in its folder plays its earlier epochs too."""
    import numpy as np
    from PIL import Image

    run = tmp_path / "run"
    train(make_cfg("trainer.max_epochs=2", "model.ngf=16", run_dir=run))
    train(make_cfg("trainer.max_epochs=3", "model.ngf=16", "resume=true", run_dir=run))
    grids = [np.asarray(Image.open(run / "samples" / f"epoch_{e:04d}.png").convert("L")) for e in range(3)]
    frames, durations = [], []
    with Image.open(run / "samples" / "progress.gif") as animation:
        for index in range(animation.n_frames):
            animation.seek(index)
            frames.append(np.asarray(animation.convert("L")))
            durations.append(animation.info["duration"])
    assert len(frames) == 3 and durations == [250, 250, 2000]
    height = grids[0].shape[0]
    for frame, grid in zip(frames, grids):
        assert frame.shape == (height + 16, grid.shape[1])
        assert np.array_equal(frame[:height], grid)
        assert frame[height:].max() > 200 and frame[height:].min() == 0  # the caption: light text on a black strip
    captions = [frame[height:] for frame in frames]
    assert not np.array_equal(captions[0], captions[1]) and not np.array_equal(captions[1], captions[2])
    assert grids[0].std() > 0 and not np.array_equal(grids[0], grids[2])  # frames that differ, in order


def test_progress_gif_leaves_out_the_grids_of_an_abandoned_timeline(make_cfg, tmp_path):
    """3 epochs, then resumed in the same folder from epoch 0's checkpoint for 2: epoch 2's grid is the first
    attempt's, after the point the run went back to, and is not played."""
    from PIL import Image

    run = tmp_path / "run"
    every_epoch = "callbacks.model_checkpoint.every_n_epochs=1"
    train(make_cfg("trainer.max_epochs=3", every_epoch, run_dir=run))
    train(make_cfg("trainer.max_epochs=2", every_epoch, f"ckpt_path={run / 'checkpoints' / 'epoch0000.ckpt'}", run_dir=run))
    assert (run / "samples" / "epoch_0002.png").exists()
    with Image.open(run / "samples" / "progress.gif") as animation:
        assert animation.n_frames == 2


def test_progress_gif_of_many_colour_grids_keeps_the_last_and_stays_close(tmp_path):
    """Colour grids go through GIF's 256-colour palette (close, not exact); more grids than max_frames are thinned
    evenly, the first and the last kept."""
    import numpy as np
    from PIL import Image

    from dcgan_lab.callbacks.samples import progress_gif

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 40)
    files = []
    for epoch in range(5):
        rgb = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (40, 1)), np.full((40, 40), 50.0 * epoch)], -1)
        rgb = np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)
        files.append(tmp_path / f"epoch_{epoch:04d}.png")
        Image.fromarray(rgb).save(files[-1])
    progress_gif(files, tmp_path / "progress.gif", max_frames=3)
    with Image.open(tmp_path / "progress.gif") as animation:
        frames = []
        for index in range(animation.n_frames):
            animation.seek(index)
            frames.append(np.asarray(animation.convert("RGB"))[:40].astype(int))
    assert len(frames) == 3
    for frame, epoch in zip(frames, (0, 2, 4)):
        grid = np.asarray(Image.open(files[epoch]).convert("RGB")).astype(int)
        assert np.abs(frame - grid).mean() < 6, epoch  # each frame is its own epoch's grid, quantised


def slerp_by_hand(a, b, t: float):
    """Spherical interpolation in float64, written from White (2016) independently of the lab's code."""
    import numpy as np

    a, b = np.float64(a), np.float64(b)
    w = np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))
    return (np.sin((1 - t) * w) * a + np.sin(t * w) * b) / np.sin(w)


@pytest.mark.parametrize("overrides, rows, steps", [
    (["training.num_samples=16", "callbacks.sample_grid.walk_rows=3", "callbacks.sample_grid.walk_steps=5"], 3, 5),
    (["training.num_samples=20", "model.conditional=true", "callbacks.sample_grid.walk_steps=4"], 10, 4),
], ids=["unconditional", "conditional"])
def test_interpolation_walks_between_pairs_of_fixed_latents(make_cfg, overrides, rows, steps):
    """samples/interpolation.png: row r shows G along the great circle from fixed latent p(r) to p(r) + 1, where
    p(r) = 2r (unconditional) or the first latent of class r (conditional, one row per class, drawn with label r);
    its ends are samples of last.png."""
    import numpy as np

    result = train(make_cfg(*overrides, "trainer.limit_train_batches=20", "model.ngf=32"))
    run = Path(result["output_dir"])
    generator, z = rebuild_generator(run), torch.load(run / "fixed_noise.pt", weights_only=True)
    per_class = len(z) // 10
    first = [r * per_class if "model.conditional=true" in overrides else 2 * r for r in range(rows)]
    path = torch.tensor(np.stack([slerp_by_hand(z[i], z[i + 1], t) for i in first for t in np.linspace(0, 1, steps)]),
                        dtype=torch.float32)
    with torch.no_grad():
        labels = (torch.arange(rows).repeat_interleave(steps),) if generator.num_classes else ()
        expected = to_uint8(generator(path, *labels))
    shown = grid_tiles(run / "samples/interpolation.png", rows * steps, nrow=steps, size=32)
    assert_same_pixels(shown, expected)
    # The ends are grid samples, and the middle differs from both by more than the comparison allows (so an end
    # repeated along the row would have failed it).
    grid_nrow = per_class if generator.num_classes else 8
    grid = grid_tiles(run / "samples/last.png", len(z), nrow=grid_nrow, size=32)
    for r, i in enumerate(first):
        assert_same_pixels(shown[[r * steps, r * steps + steps - 1]], grid[[i, i + 1]])
    walks = shown.view(rows, steps, 32, 32).int()
    for end in (0, steps - 1):
        assert ((walks[:, steps // 2] - walks[:, end]).abs() > 1).float().mean() > 0.05


def optimizer_steps(run: Path) -> tuple[int, int]:
    """(D updates, G updates) as Adam itself counted them in last.ckpt."""
    states = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["optimizer_states"]
    return tuple(int(next(iter(s["state"].values()))["step"]) if s["state"] else 0 for s in states)


@pytest.mark.parametrize("n_critic, batches, g_steps", [(1, 6, 6), (2, 6, 3), (3, 7, 2)])
def test_n_critic_counts_generator_steps(make_cfg, n_critic, batches, g_steps):
    result = train(make_cfg(f"training.n_critic={n_critic}", f"trainer.limit_train_batches={batches}"))
    assert optimizer_steps(Path(result["output_dir"])) == (batches, g_steps)
    assert result["g_steps"] == g_steps


def test_accumulation_updates_once_per_batch_and_logs_the_whole_batch(make_cfg):
    result = train(make_cfg("training.accumulate=2", "trainer.limit_train_batches=6", "trainer.log_every_n_steps=1"))
    run = Path(result["output_dir"])
    assert optimizer_steps(run) == (6, 6)
    assert len(column(read_metrics(run), "loss/d")) == 6


def test_data_of_fewer_batches_than_the_logging_interval_logs_each_epochs_end(make_cfg, caplog, recwarn):
    """4 batches an epoch under trainer.log_every_n_steps=10 (a small image folder): Lightning would write no loss
    row in 2 epochs and warn from its site-packages; the lab logs each epoch's last batch and says so in one line."""
    with caplog.at_level("INFO", logger="dcgan_lab.module"):
        result = train(make_cfg("trainer.max_epochs=2", "trainer.log_every_n_steps=10"))
    rows = [row for row in read_metrics(Path(result["output_dir"])) if row.get("loss/d") not in (None, "")]
    assert [(int(row["epoch"]), int(float(row["g_step"]))) for row in rows] == [(0, 4), (1, 8)]
    assert "trainer.log_every_n_steps=10 is more than an epoch's 4 batches: the losses are logged every 4" in caplog.text
    assert not [w for w in recwarn if "smaller than the logging interval" in str(w.message)]


def test_max_steps_counts_generator_steps(make_cfg, capfd, caplog):
    """3 G steps with 2 D steps each: 6 of 20 batches. The bar's last redraw shows 6/20 (not 0/20, the last
    multiple of its refresh rate), and the lab's line says in G steps where the run stopped."""
    bar = progress_bar(10)
    with caplog.at_level("INFO", logger="dcgan_lab.pipeline"):
        result = train(make_cfg("trainer.max_steps=3", "training.n_critic=2", "trainer.limit_train_batches=20", *bar))
    assert result["g_steps"] == 3
    last_redraw = capfd.readouterr().out.strip().split("\r")[-1]  # Lightning's tqdm bar writes to stdout
    assert re.search(r"Epoch 0: +30%\|.*\| 6/20 ", last_redraw), last_redraw
    assert "Stopped at trainer.max_steps=3 G steps (6 batches, 2 D steps each)" in caplog.text


def test_each_epoch_leaves_its_finished_bar_on_its_own_line(make_cfg, capfd):
    """The console keeps every epoch's last losses, and lines logged between epochs do not land inside a bar."""
    bar = progress_bar(10)
    train(make_cfg("trainer.max_epochs=2", "trainer.limit_train_batches=3", *bar))
    lines = capfd.readouterr().out.split("\n")  # not splitlines(): it splits at every \r redraw too
    finished = [line.strip().split("\r")[-1] for line in lines]
    assert [line.split("|")[0] for line in finished if line.strip()] == ["Epoch 0: 100%", "Epoch 1: 100%"]
    assert all(re.search(r"3/3 .*loss/d=[-\d.e]+, loss/g=[-\d.e]+\]$", line) for line in finished if line.startswith("Epoch"))


SMALL_CLI = ["logger=csv", "model.ngf=8", "model.ndf=8", "dataset.batch_size=16", "trainer.max_epochs=2",
             "trainer.limit_train_batches=3", "metrics=none", "callbacks.throughput.warmup=1"]


@pytest.mark.slow  # a CLI run of whole epochs: ~30 s; EpochLines' own tests stay fast
def test_a_console_that_is_not_a_terminal_gets_a_line_per_epoch(tmp_path):
    """`python train.py > log` (a SLURM log, nohup): no bar redraws piling up on one line, but one log line per
    epoch with its losses and speed, in the console and in train.log."""
    # Whole epochs of 3 batches (4,500 digits in batches of 1,500): limit_train_batches left at its default.
    whole_epochs = [o for o in SMALL_CLI if not o.startswith(("trainer.limit_train", "dataset.batch_size"))]
    proc = run_cli([*whole_epochs, "dataset.batch_size=1500", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-3000:]
    assert "\r" not in console and "Epoch 0:" not in console
    assert "configured so 100%" not in console  # Lightning's note on an explicit limit_train_batches=1.0
    log_text = (tmp_path / "run" / "train.log").read_text()
    for epoch in (0, 1):  # the index of samples/epoch_0000.png and metrics.csv, then how far the run has come
        line = re.search(rf"- epoch {epoch} done \({epoch + 1} of 2\), G step {3 * (epoch + 1)}: loss/d=[-\d.e]+, "
                         r"loss/g=[-\d.e]+ \(\d+ img/s\)\n", console)
        assert line, console[-3000:]
        assert line.group(0) in log_text


@pytest.mark.slow  # over 10 s on 2 cores: make test-slow
def test_a_terminal_gets_the_bar(tmp_path):
    """The same command in a terminal (a real pseudo-terminal): the bar, redrawn in place, and no epoch lines."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios
    import threading

    from tests.conftest import PYTHON, ROOT

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 24 rows, 120 columns, as a window has
    proc = subprocess.Popen([PYTHON, str(ROOT / "train.py"), *SMALL_CLI, f"hydra.run.dir={tmp_path / 'run'}"],
                            cwd=tmp_path, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL,
                            env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    os.close(follower)
    chunks = []

    def read():  # keep draining the terminal, or a full buffer would block the run
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the run ended and closed its side
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    assert proc.wait(timeout=300) == 0
    reader.join(timeout=30)
    os.close(leader)
    console = b"".join(chunks).decode(errors="replace")
    assert re.search(r"Epoch 1: 100%\|.*\| 3/3 ", console), console[-3000:]
    assert "\r" in console and not re.search(r"- epoch \d done", console)


def test_console_auto_shows_the_bar_where_it_redraws_in_place(make_cfg, monkeypatch):
    # A terminal and a notebook's output get the bar, a file the lines. (NotebookOutput stands in for ipykernel's
    # OutStream: Jupyter is not installed here. The real terminal is test_a_terminal_gets_the_bar's.)
    import io

    from dcgan_lab.pipeline import console_form

    class NotebookOutput(io.StringIO):
        pass

    NotebookOutput.__module__ = "ipykernel.iostream"
    cfg = make_cfg()
    for stream, form in ((NotebookOutput(), "bar"), (io.StringIO(), "lines")):
        monkeypatch.setattr("sys.stdout", stream)
        assert console_form(cfg) == form
    assert console_form(make_cfg("console=bar")) == "bar" and console_form(make_cfg("console=lines")) == "lines"


def test_long_epochs_report_the_batches_done_between_epoch_lines(make_cfg, caplog):
    # every_s=0: a line after every batch (60 s by default), with the share of the epoch done and the time left.
    with caplog.at_level("INFO", logger="dcgan_lab.callbacks.progress"):
        train(make_cfg("+callbacks.lines={_target_:dcgan_lab.callbacks.progress.EpochLines,every_s:0}",
                       "callbacks.throughput.warmup=0"))
    lines = [r.getMessage() for r in caplog.records if r.name == "dcgan_lab.callbacks.progress"]
    assert [re.sub(r"\d+ s", "T", line) for line in lines[:4]] == [
        f"epoch 0 (1 of 1): {done}/4 batches ({25 * done}%), T, about T left in the epoch" for done in (1, 2, 3, 4)]
    assert re.fullmatch(r"epoch 0 done \(1 of 1\), G step 4: loss/d=[-\d.e]+, loss/g=[-\d.e]+ \(\d+ img/s\)", lines[4]), lines[4]
    assert len(lines) == 5


def test_a_run_resumed_mid_epoch_times_the_rest_of_that_epoch(make_cfg, tmp_path, caplog):
    """Lightning skips on_train_epoch_start when it resumes inside an epoch: the lines once timed it from 0, i.e.
    the machine's uptime ("epoch 0 (1 of 2): 32/70 batches (45%), 12 h 02 min, about 14 h 18 min left")."""
    import signal

    run, lines = tmp_path / "run", "+callbacks.lines={_target_:dcgan_lab.callbacks.progress.EpochLines,every_s:0}"
    previous_handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit):
            train(make_cfg("resume=true", "+callbacks.interrupt._target_=tests.test_reliability.InterruptAt",
                           "+callbacks.interrupt.at_batch=1", run_dir=run))  # Ctrl-C: saved after batch 1 of 4
    finally:
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    with caplog.at_level("INFO", logger="dcgan_lab.callbacks.progress"):
        train(make_cfg("resume=true", lines, "trainer.max_epochs=2", run_dir=run))
    said = [r.getMessage() for r in caplog.records if r.name == "dcgan_lab.callbacks.progress"][:2]
    assert [re.sub(r"\b\d s\b", "T", line) for line in said] == [
        f"epoch 0 (1 of 2): {done}/4 batches ({25 * done}%), T, about T left in the epoch" for done in (3, 4)], said


def test_durations_read_as_a_person_writes_them():
    from dcgan_lab.callbacks.progress import _duration

    assert [_duration(s) for s in (0.4, 42, 185, 3599.6, 7620)] == ["0 s", "42 s", "3 min 05 s", "1 h 00 min", "2 h 07 min"]


class GradNormsAtStep(L.Callback):
    """Records the global gradient norm each optimizer step receives (after the lab's clipping)."""
    seen: list = []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        GradNormsAtStep.seen.append(torch.stack(torch._foreach_norm(grads)).norm().item())


def test_gradient_clipping_bounds_the_step_and_logs_the_norm_before_it(make_cfg, tmp_path):
    GradNormsAtStep.seen = []
    clipped = train(make_cfg("training.grad_clip=0.05", "trainer.log_every_n_steps=1", "trainer.limit_train_batches=6",
                             "+callbacks.grad_probe._target_=tests.test_training.GradNormsAtStep"))
    assert len(GradNormsAtStep.seen) == 12 and max(GradNormsAtStep.seen) <= 0.05 * (1 + 1e-4), GradNormsAtStep.seen
    logged = {name: column(read_metrics(Path(clipped["output_dir"])), name) for name in ("grad_norm/d", "grad_norm/g")}
    # metrics.csv shows the norms as the backward gave them, so a user sees how far past the clip they went
    assert all(len(norms) == 6 and min(norms) > 0.05 for norms in logged.values()), logged
    free = train(make_cfg("trainer.log_every_n_steps=1", "trainer.limit_train_batches=6", run_dir=tmp_path / "free"))
    assert column(read_metrics(Path(free["output_dir"])), "grad_norm/d")[0] == pytest.approx(logged["grad_norm/d"][0], rel=1e-5)


def test_instance_noise_anneals_to_zero_over_its_g_steps(make_cfg):
    result = train(make_cfg("training.instance_noise=0.2", "training.instance_noise_anneal_steps=4", "training.n_critic=2",
                            "trainer.limit_train_batches=12", "trainer.log_every_n_steps=1"))
    rows = read_metrics(Path(result["output_dir"]))
    logged = [float(r["instance_noise"]) for r in rows if r.get("instance_noise")]
    # each batch uses sigma = 0.2 * (1 - G steps so far / 4): two batches per G step with n_critic=2
    assert logged == pytest.approx([0.2, 0.2, 0.15, 0.15, 0.1, 0.1, 0.05, 0.05, 0, 0, 0, 0])


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss=wgan_gp", "norm=layer", "training.n_critic=2"],
        ["loss=lsgan", "training.real_label=0.9", "training.flip_prob=0.1"],
        ["training.accumulate=2", "schedule=linear", "loss.r1_weight=1.0"],
        ["loss=ragan", "loss.feature_matching_weight=1.0", "model.ema_decay=0.9"],
        ["ablation=bcr", "augment=diffaugment", "model.conditional=true"],
        # the projection term reads D's features with the batch's std among them
        ["ablation=minibatch_std", "model.conditional=true", "model.d_conditioning=projection", "loss.feature_matching_weight=1"],
    ],
    ids=["wgan_gp", "lsgan_smooth_flip", "accumulate_schedule_r1", "ragan_feature_matching_ema", "bcr_diffaugment_conditional",
         "minibatch_std_projection_feature_matching"],
)
def test_stabilisers_train(make_cfg, overrides):
    """Each mix trains through Lightning (the objective's terms are checked against hand sums in test_objective)."""
    result = train(make_cfg(*overrides, "trainer.log_every_n_steps=1"))
    assert all(torch.isfinite(torch.tensor(v)) for v in result["metrics"].values())
    assert sum(optimizer_steps(Path(result["output_dir"]))) >= 6


def test_linear_schedule_decays_lr_per_generator_step(make_cfg):
    # n_critic=2: 8 batches, 8 D steps, 4 G steps (on batches 1, 3, 5, 7). linear_decay over 4 G steps keeps the
    # rate for 2 of them, then 1 - (s - 2) / 2: factor 1, 1, 1, 0.5 after 0..3 G steps, 0 after 4.
    result = train(make_cfg("schedule=linear", "training.n_critic=2", "trainer.limit_train_batches=8",
                            "trainer.log_every_n_steps=1"))
    assert result["g_steps"] == 4
    rows = read_metrics(Path(result["output_dir"]))
    expected = [2e-4 * factor for factor in (1, 1, 1, 1, 1, 1, 0.5, 0.5)]  # G steps before batch 0..7: 0 0 1 1 2 2 3 3
    for name in ("lr/d", "lr/g"):  # D's and G's rate, as each batch's updates used them
        assert column(rows, name) == pytest.approx(expected), name
    final = torch.load(Path(result["output_dir"]) / "checkpoints/last.ckpt", weights_only=True)
    assert [group["lr"] for state in final["optimizer_states"] for group in state["param_groups"]] == [0.0, 0.0]


def test_resume_continues_step_counter_and_keeps_fixed_noise(make_cfg, tmp_path):
    first = train(make_cfg(run_dir=tmp_path / "first"))
    ckpt = Path(first["output_dir"]) / "checkpoints/last.ckpt"
    state = torch.load(ckpt, weights_only=False)
    assert state["batches_seen"] == 4
    resumed = train(make_cfg(f"ckpt_path={ckpt}", "trainer.max_epochs=2", run_dir=tmp_path / "second"))
    assert resumed["g_steps"] == 8  # 4 before + 4 in the second epoch
    after = torch.load(Path(resumed["output_dir"]) / "checkpoints/last.ckpt", weights_only=False)
    assert after["epoch"] == state["epoch"] + 1 and after["batches_seen"] == 8
    torch.testing.assert_close(after["state_dict"]["fixed_z"], state["state_dict"]["fixed_z"])
    # Adam's step count carried over: 8 updates of G, not 4.
    g_opt = after["optimizer_states"][1]["state"]
    assert int(next(iter(g_opt.values()))["step"]) == 8


def test_missing_image_folder_is_one_clear_line(make_cfg, tmp_path):
    cfg = make_cfg("dataset=image_folder", f"dataset.path={tmp_path / 'nope'}")
    with pytest.raises(DataError, match=r"dataset.path=.*nope is not a folder"):
        train(cfg)


def test_image_folder_trains_from_decoded_cache(make_cfg, tmp_path):
    from PIL import Image

    folder = tmp_path / "art" / "nested"
    folder.mkdir(parents=True)
    for i in range(20):
        Image.new("RGB", (40 + i, 30), (10 * i, 100, 200)).save(folder / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    cfg = make_cfg("dataset=image_folder", f"dataset.path={tmp_path / 'art'}", "dataset.image_size=16",
                   "dataset.batch_size=4", f"paths.cache_dir={tmp_path / 'cache'}")
    result = train(cfg)
    assert result["g_steps"] == 4
    assert len(list((tmp_path / "cache" / "images").glob("*.npy"))) == 1


def test_offline_download_fails_with_one_line(make_cfg, tmp_path):
    cfg = make_cfg("dataset=cifar10", f"paths.data_dir={tmp_path / 'data'}", "dataset.source.download=false")
    with pytest.raises(DataError) as info:
        train(cfg)
    assert "CIFAR10" in str(info.value) and "mnist_mini" in str(info.value) and "\n" not in str(info.value)


def test_wandb_offline_run_folder(make_cfg, tmp_path, capfd, monkeypatch):
    from tests.pixels import assert_same_pixels
    from tests.wandb_records import logged_images, offline_run, the_offline_run

    monkeypatch.delenv("WANDB_SILENT")  # as a user runs it: W&B's own warnings reach the console
    bar = progress_bar(2)
    result = train(make_cfg("logger=wandb", "trainer.log_every_n_steps=1", *bar))
    console = capfd.readouterr()
    assert "anonymous" not in console.err  # W&B warns about a setting Lightning passes by default
    assert "loss/d=" in console.out and "v_num" not in console.out  # W&B's run id is not a training value
    run_dir, run_file = the_offline_run(result["output_dir"])
    run = offline_run(run_file)
    assert json.loads(run["config"]["loss"])["d"]["_target_"] == "dcgan_lab.losses.bce_d"
    assert {"loss/d", "loss/g"} <= {k.split("/", 1)[1] for k in run["summary"] if k.startswith("last/")}
    # The grids on the dashboard are the run folder's PNGs, pixel for pixel (not a [0, 1] grid read as bytes).
    samples = Path(result["output_dir"]) / "samples"
    shown = logged_images(run_dir, run_file)["samples"]
    assert len(shown) == 2
    for (media, _caption, _row), local in zip(shown, [samples / "epoch_0000.png", samples / "last.png"]):
        assert_same_pixels(media, local, "W&B samples")
    # One epoch ran, epoch 0: the end's grid and walk are its state too, not an "epoch 1" that never ran.
    assert [caption for _media, caption, _row in shown] == ["samples/epoch_0000.png, epoch 0", "samples/last.png, epoch 0"]
    assert [caption for _m, caption, _r in logged_images(run_dir, run_file)["samples/interpolation"]] == [
        "samples/interpolation.png, epoch 0"]
    assert (Path(result["output_dir"]) / "metrics.csv").is_file()  # the CSV is written whatever the logger


def test_a_resumed_runs_wandb_summary_counts_the_train_time_of_every_part(make_cfg, tmp_path):
    # Its last/ and best/ values come from the whole run's metrics.csv; its train_time_s is status.json's: every part.
    from tests.wandb_records import offline_run, the_offline_run

    first = train(make_cfg("trainer.max_epochs=1"))
    resumed = train(make_cfg("logger=wandb", "trainer.max_epochs=2", "trainer.log_every_n_steps=1",
                             f"ckpt_path={Path(first['output_dir']) / 'checkpoints' / 'last.ckpt'}", run_dir=tmp_path / "resumed"))
    summary = offline_run(the_offline_run(resumed["output_dir"])[1])["summary"]
    assert resumed["metrics"]["train_time_s"] > first["metrics"]["train_time_s"]
    assert json.loads(summary["train_time_s"]) == resumed["metrics"]["train_time_s"]
    assert json.loads(summary["rollbacks"]) == 0 and "rollbacks_diverged_at_g_step" not in summary  # guarded, none


@pytest.mark.slow  # over 10 s on 2 cores: make test-slow
def test_cli_fast_dev_run(tmp_path):
    proc = run_cli(
        ["loss=hinge", "model.attention=true", "trainer.fast_dev_run=true", "logger=csv", "metrics=none",  # metrics: the sweep CLI test
         f"hydra.run.dir={tmp_path / 'cli'}"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "cli"
    assert (run / "config.yaml").is_file() and (run / "samples" / "last.png").is_file()
    assert "hinge_d" in (run / "config.yaml").read_text()
    # Each of Lightning's lines once (Hydra's handler), not again with Lightning's own "INFO: " prefix.
    console = proc.stdout + proc.stderr
    assert console.count("`Trainer.fit` stopped") == 1, console[-3000:]
    assert "INFO: " not in console
    assert "Tip" not in console  # Lightning's advertisement for its cloud logger
    assert "train_dataloader" not in console  # Lightning sizing the data for the schedule: its bookkeeping
    assert "LeafSpec" not in console  # torch's deprecation of an API Lightning uses: nothing a user can change
    assert "Total FLOPs" not in console  # Lightning's summary, which counted 0: the lab's table replaces it
    log_text = (run / "train.log").read_text()
    assert "`Trainer.fit` stopped" in log_text
    # The networks' table, in the log too: G with its attention block, counted (not 0) per image.
    table = log_text.split("networks:\n", 1)[1].splitlines()[:3]
    assert table[0].split() == ["type", "params", "trainable", "FLOPs/image", "output"]
    g_row, d_row = table[1].split(), table[2].split()
    assert g_row[:2] == ["generator", "Generator"] and g_row[-1] == "1x32x32" and float(g_row[-3]) > 0
    assert d_row[:2] == ["discriminator", "Discriminator"] and d_row[-1] == "1" and float(d_row[-3]) > 0


def test_cli_bad_value_exits_2_with_one_line(tmp_path):
    proc = run_cli(["dataset.image_size=48", f"hydra.run.dir={tmp_path / 'bad'}"], cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: dataset.image_size=48") and "power of two" in lines[-1]
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_spherical_interpolation_keeps_the_norm_and_hits_both_ends():
    from dcgan_lab.callbacks.samples import interpolate, walk_latents

    g = torch.Generator().manual_seed(0)
    start, end = torch.randn(4, 100, generator=g), torch.randn(4, 100, generator=g)
    end = end / end.norm(dim=1, keepdim=True) * start.norm(dim=1, keepdim=True)  # equal norms per row
    t = torch.linspace(0, 1, 7)
    for spherical in (True, False):
        path = interpolate(start, end, t, spherical)
        assert path.shape == (4, 7, 100)
        assert torch.equal(path[:, 0], start) and torch.equal(path[:, -1], end)  # exactly the fixed latents
    norms = interpolate(start, end, t).norm(dim=2)
    torch.testing.assert_close(norms, start.norm(dim=1, keepdim=True).expand(4, 7))
    # Straight lines sag into the interior: two near-orthogonal 100-d ends meet at ~|z| / sqrt(2) midway.
    sag = interpolate(start, end, torch.tensor([0.5]), spherical=False).norm(dim=2)[:, 0] / start.norm(dim=1)
    assert ((sag > 0.6) & (sag < 0.85)).all(), sag
    # Parallel ends (the angle is 0): the straight line, no NaN.
    same = interpolate(start, 2 * start, t)
    torch.testing.assert_close(same, start.unsqueeze(1) * (1 + t.view(1, -1, 1)))
    # Rows: pairs (0, 1), (2, 3), ... up to `rows`; a conditional walk takes each class's first two latents.
    z = torch.randn(12, 3, generator=g)
    path, labels = walk_latents(z, None, rows=10, steps=3)
    assert labels is None and path.shape == (6 * 3, 3)
    assert torch.equal(path[0::3], z[0::2]) and torch.equal(path[2::3], z[1::2])
    path, labels = walk_latents(z, torch.arange(4).repeat_interleave(3), rows=10, steps=2)
    assert torch.equal(path[0::2], z[[0, 3, 6, 9]]) and torch.equal(path[1::2], z[[1, 4, 7, 10]])
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("n, channels, nrow", [(64, 1, 8), (10, 3, 8), (3, 1, 8), (100, 1, 10)])
def test_sample_grid_pixels_are_torchvisions(tmp_path, n, channels, nrow):
    """The grid built on the images' device writes the pixels torchvision's save_image writes (layout, padding,
    rounding), for full, ragged and narrow grids, grey and RGB."""
    import numpy as np
    from PIL import Image
    from torchvision.utils import save_image

    from dcgan_lab.callbacks.samples import save_png, uint8_grid

    images = torch.randn(n, channels, 16, 16, generator=torch.Generator().manual_seed(n)) * 0.8  # some beyond [-1, 1]
    save_image(images, tmp_path / "torchvision.png", nrow=nrow, normalize=True, value_range=(-1, 1), padding=2)
    save_png(uint8_grid(images, nrow), tmp_path / "lab.png")
    expected, shown = (np.array(Image.open(tmp_path / f)) for f in ("torchvision.png", "lab.png"))
    assert shown.shape == expected.shape and (shown == expected).all()
