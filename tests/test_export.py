"""Samples as files (python -m dcgan_lab.export) and files as samples (evaluate.py images=...): an export holds the
pixels G draws from the latents evaluate.py uses, measures exactly what its checkpoint measures, and other tools'
folders and .npz files are read as they are, or refused with one line."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan_lab.config import compose_run_config
from dcgan_lab.errors import DataError
from dcgan_lab.export import export_samples, main as export_main, read_samples
from dcgan_lab.metrics.checkpoints import evaluate, main as evaluate_main
from dcgan_lab.pipeline import train

from .conftest import FAST, PYTHON, ROOT, compose_config
from .test_training import rebuild_generator

N = 120
MEASURED = "metrics.enabled=[classifier,clustering,memorization,d_overfitting]"


@pytest.fixture(scope="module", params=["unconditional", "conditional"])
def run(request, tmp_path_factory) -> Path:
    """A briefly trained run (8 G steps), unconditional or class-conditional."""
    run = tmp_path_factory.mktemp(request.param) / "run"
    extra = ["model.conditional=true"] if request.param == "conditional" else []
    train(compose_config(run, [*FAST, "trainer.limit_train_batches=8", *extra]))
    return run


def expected_pixels(run: Path, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, H, W) uint8 samples and their labels, recomputed here: latents from torch.randn under the seed (the first n
    of whole 1024-row blocks), labels 0..K-1 in turn, G from last.ckpt in eval mode, pixels rounded as torchvision's
    save_image rounds them."""
    generator = rebuild_generator(run)
    z = torch.randn(-(-n // 1024) * 1024, generator.latent_dim, generator=torch.Generator().manual_seed(seed))[:n]
    k = getattr(generator, "num_classes", 0)
    labels = torch.arange(n) % k if k else None
    with torch.no_grad():
        images = generator(z, labels) if k else generator(z)
    pixels = torch.floor((images[:, 0].clamp(-1, 1) + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    return pixels.numpy(), None if labels is None else labels.numpy()


def evaluate_in_process(tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_run_config(tmp_path, ["device=cpu", "metrics.n_samples=120", MEASURED, *overrides],
                             root_dir=ROOT, config_name="evaluate")
    return evaluate(cfg)


def test_an_export_holds_the_samples_and_measures_what_its_checkpoint_measures(run, tmp_path, capsys):
    folder, npz = tmp_path / "samples", tmp_path / "samples.npz"
    assert export_main([str(run), "--n", str(N), "--out", str(folder)]) == 0  # a run folder: its last.ckpt
    assert export_main([str(run / "checkpoints" / "last.ckpt"), "--n", str(N), "--out", str(npz)]) == 0
    assert f"wrote {N} samples to {npz}" in capsys.readouterr().out
    pixels, labels = expected_pixels(run, N)

    # The folder: one grey PNG per sample, named by its index; a conditional G's in its class's subfolder.
    files = sorted(folder.rglob("*.png"))
    assert len(files) == N
    for file in files:
        index = int(file.stem)
        with Image.open(file) as image:
            assert image.mode == "L" and image.size == (32, 32)
            assert np.array_equal(np.asarray(image), pixels[index]), file
        assert file.parent == (folder if labels is None else folder / str(labels[index]))
    manifest = json.loads((folder / "export.json").read_text())
    assert manifest["checkpoint"] == str((run / "checkpoints" / "last.ckpt").resolve())
    assert (manifest["n"], manifest["seed"], manifest["image_shape"]) == (N, 0, [1, 32, 32])
    assert manifest["classes"] == (None if labels is None else 10)

    # The .npz: arr_0 (N, H, W, 1), arr_1 the labels, read without pickle.
    with np.load(npz, allow_pickle=False) as data:
        assert np.array_equal(data["arr_0"][..., 0], pixels) and data["arr_0"].shape == (N, 32, 32, 1)
        assert (labels is None) == ("arr_1" not in data.files)
        if labels is not None:
            assert np.array_equal(data["arr_1"], labels)
        assert json.loads(str(data["manifest"]))["n"] == N

    # Read back: the same images in index order, the labels from the class folders.
    for exported in (folder, npz):
        images, read_labels = read_samples(exported)
        assert np.array_equal(images[:, 0].numpy(), pixels)
        assert (read_labels is None) == (labels is None)
        if labels is not None:
            assert np.array_equal(read_labels.numpy(), labels)

    # Measured: the checkpoint (the same latents, metrics.seed 0) and both exports give the same numbers.
    [from_checkpoint] = evaluate_in_process(tmp_path, f"ckpt={run}", "figures=false").values()
    from_folder = evaluate_in_process(tmp_path, f"images={folder}", "dataset=mnist_mini")["samples"]
    from_npz = evaluate_in_process(tmp_path, f"images={npz}", "dataset=mnist_mini")["samples.npz"]
    scalars = [k for k, v in from_checkpoint.items()
               if isinstance(v, float) and k not in ("metrics/eval_time_s", "d_overfit/auc", "d_overfit/auc_excess")]  # images come without D
    assert {"classifier/fid", "cluster/silhouette", "memorization/nn_ratio"} <= set(scalars)
    assert ("classifier/accuracy" in scalars) == (labels is not None)  # the class folders' labels reach the classifier
    for name in scalars:  # equal pixels; float round-off (~1e-8) in the feature statistics
        assert from_folder[name] == pytest.approx(from_checkpoint[name], rel=1e-6, abs=1e-9), name
        assert from_npz[name] == pytest.approx(from_checkpoint[name], rel=1e-6, abs=1e-9), name
    assert from_folder["images"] == str(folder.resolve())
    assert "d_overfit/auc" in from_checkpoint and "d_overfit/auc" not in from_folder
    assert from_folder["d_overfitting_skipped"].startswith("d_overfitting skipped: it needs the discriminator")
    figures = tmp_path / "samples_metrics"
    assert json.loads((figures / "metrics.json").read_text())["samples"]["classifier/fid"] == from_folder["classifier/fid"]
    with Image.open(figures / "nearest_training_images.png") as grid:  # 8 rows: a sample, then its 5 neighbours
        assert grid.size == (6 * 34 + 2, 8 * 34 + 2)


@pytest.mark.slow  # evaluate.py in a process of its own: ~15 s
def test_evaluate_measures_a_folder_from_the_command_line(tmp_path):
    """Any folder of images (here a hand-made one, not an export) against a dataset, as a user types it."""
    folder = tmp_path / "other model"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(folder / f"img{i}.png")
    proc = subprocess.run([PYTHON, str(ROOT / "evaluate.py"), f"images={folder}", "dataset=mnist_mini",
                           "metrics.enabled=[memorization]", "device=cpu"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "other model" in proc.stdout and "memorization/nn_ratio" in proc.stdout
    entry = json.loads((tmp_path / "other model_metrics" / "metrics.json").read_text())["other model"]
    assert entry["metrics/n_samples"] == 40 and entry["dataset"] == "mnist_mini"
    assert entry["memorization/nn_ratio"] > 2  # noise lies far from every digit


def test_an_export_is_whole_or_absent_and_never_overwrites(run, tmp_path, monkeypatch, capsys):
    import dcgan_lab.export as export

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    assert export_main([str(run), "--n", "10", "--out", str(existing)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --out {existing} exists; choose a new path or remove it "
                                               "(an export never overwrites)")
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]

    for args, line in ((["--n", "0"], "error: --n 0: export at least one image"),
                       (["--batch-size", "0"], "error: --batch-size 0: G needs at least one latent per batch")):
        assert export_main([str(run), *args, "--out", str(tmp_path / "new")]) == 2
        assert capsys.readouterr().err.strip() == line
    assert export_main([str(tmp_path), "--out", str(tmp_path / "new")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path} holds no checkpoints/last.ckpt; pass a run folder or a .ckpt file"

    # Killed after 7 images (a full disk, Ctrl-C): no folder named --out, and no temporary folder left.
    written = []

    def failing_png(image, path):
        if len(written) == 7:
            raise OSError("No space left on device")
        written.append(path)
        Image.fromarray(image[0].numpy()).save(path)

    monkeypatch.setattr(export, "_png", failing_png)
    with pytest.raises(OSError, match="No space left"):
        export_samples(run, 50, tmp_path / "cut", batch_size=4, progress=False)
    assert len(written) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_an_npz_export_is_written_as_it_is_drawn_and_a_cut_one_leaves_nothing(run, tmp_path, monkeypatch):
    # One batch in memory at a time: when G draws batch k, the k batches before it are already in the file.
    import dcgan_lab.metrics.suite as suite

    real_generate, on_disk = suite.generate, []
    out = tmp_path / "stream" / "samples.npz"
    out.parent.mkdir()

    def watching_generate(generator, z, labels, batch_size, device):
        on_disk.append(sum(p.stat().st_size for p in out.parent.iterdir()))  # the hidden temp file, while written
        if fail_at is not None and len(on_disk) == fail_at:
            raise OSError("No space left on device")
        return real_generate(generator, z, labels, batch_size, device)

    monkeypatch.setattr(suite, "generate", watching_generate)
    fail_at = None
    export_samples(run, 50, out, batch_size=10, progress=False)
    batch_bytes = 10 * 32 * 32  # ten 32x32 grey images
    assert len(on_disk) == 5 and all(size >= (k - 1) * batch_bytes for k, size in enumerate(on_disk))
    with np.load(out, allow_pickle=False) as data:
        pixels, labels = expected_pixels(run, 50)
        np.testing.assert_array_equal(data["arr_0"][..., 0], pixels)
        assert json.loads(str(data["manifest"]))["image_shape"] == [1, 32, 32]

    on_disk.clear()
    fail_at = 3
    cut = tmp_path / "cut" / "samples.npz"
    cut.parent.mkdir()
    out = cut
    with pytest.raises(OSError, match="No space left"):
        export_samples(run, 50, cut, batch_size=10, progress=False)
    assert list(cut.parent.iterdir()) == []  # no samples.npz, no temp file


def test_folders_and_npz_files_from_other_tools_are_read_or_refused_with_one_line(tmp_path):
    folder = tmp_path / "rgb"
    folder.mkdir()
    red = np.zeros((16, 16, 4), np.uint8)
    red[..., 0], red[..., 3] = 200, 255
    Image.fromarray(red, "RGBA").save(folder / "a.png")
    Image.fromarray(red[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "b.png")  # palette
    Image.fromarray(red[..., :3]).save(folder / "c.bmp")
    (folder / "notes.txt").write_text("not an image")
    images, labels = read_samples(folder)
    assert images.shape == (3, 3, 16, 16) and images.dtype == torch.uint8 and labels is None
    assert images[:, 0].eq(200).all() and images[:, 1:].eq(0).all()

    from dcgan_lab.export import _class_folder

    assert [_class_folder(3, 10), _class_folder(3, 12), _class_folder(11, 12)] == ["3", "03", "11"]
    classes = tmp_path / "classes"  # class folders as a 12-class export names them: 00, ..., 11
    for label in ("00", "11"):
        (classes / label).mkdir(parents=True)
        Image.fromarray(np.full((4, 4), int(label), np.uint8)).save(classes / label / f"0000{label}.png")
    images, labels = read_samples(classes)
    assert labels.tolist() == [0, 11] and images[:, 0, 0, 0].tolist() == [0, 11]

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "d.png")
    with pytest.raises(DataError, match=r"mixes image sizes \(\(8, 8, 3\) and \(16, 16, 3\)"):
        read_samples(folder)

    floats, objects, text = tmp_path / "floats.npz", tmp_path / "objects.npz", tmp_path / "text.npz"
    np.savez(floats, arr_0=np.zeros((2, 8, 8, 3), np.float32))
    np.savez(objects, arr_0=np.array([{"any": "object"}], dtype=object))
    text.write_text("hello")
    with pytest.raises(DataError, match=r"arr_0 is float32 \(2, 8, 8, 3\); expected uint8 \(N, H, W, 1 or 3\)"):
        read_samples(floats)
    for refused in (objects, text):  # a pickled object is never loaded
        with pytest.raises(DataError, match="is not an .npz of plain arrays"):
            read_samples(refused)


def test_evaluate_images_refuses_what_it_cannot_measure_with_one_line(tmp_path, capsys):
    folder = tmp_path / "grey"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "0.png")
    empty, short, floats, outside, few = (tmp_path / f"{name}.npz" for name in ("empty", "short", "floats", "outside", "few"))
    digits = np.zeros((4, 32, 32, 1), np.uint8)
    np.savez(empty, arr_0=digits[:0])
    np.savez(few, arr_0=digits)  # all of them are measured: fewer than k-means's k (10) cannot be
    np.savez(short, arr_0=digits, arr_1=np.arange(3))
    np.savez(floats, arr_0=digits, arr_1=np.arange(4.0))
    np.savez(outside, arr_0=digits, arr_1=np.array([0, 9, 57, 1]))  # MNIST's classes are 0..9
    classes = tmp_path / "classes"
    for label in ("3", "57"):
        (classes / label).mkdir(parents=True)
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(classes / label / f"{label}.png")
    cases = {
        (f"images={folder}",): f"error: images={folder} needs dataset=<the data the images imitate> to measure them "
                               "against, e.g. dataset=mnist_mini (and dataset.image_size=<their size> where it differs)",
        (f"images={folder}", "dataset=cifar10"): f"error: images={folder} are 32x32 grey but dataset=cifar10 is 32x32 RGB; "
                                                 "measure them against data of their shape (dataset.image_size=<their size> "
                                                 "resizes the data)",
        (f"images={folder}", f"ckpt={tmp_path}", "dataset=mnist_mini"): "error: evaluate.py measures ckpt=<checkpoint, run "
                                                                        "or sweep folder, or glob> or images=<folder or .npz> "
                                                                        "dataset=<its data>: give one of them",
        (f"images={empty}", "dataset=mnist_mini"): f"error: images={empty}: arr_0 holds no images (0, 32, 32, 1); "
                                                   "expected at least one uint8 (N, H, W, 1) image",
        (f"images={short}", "dataset=mnist_mini"): f"error: images={short}: arr_1 is int64 (3,); expected (4,) integer "
                                                   "labels, one per image of arr_0 (or no arr_1)",
        (f"images={floats}", "dataset=mnist_mini"): f"error: images={floats}: arr_1 is float64 (4,); expected (4,) "
                                                    "integer labels, one per image of arr_0 (or no arr_1)",
        (f"images={outside}", "dataset=mnist_mini"): f"error: images={outside}: arr_1 holds label 57, but "
                                                     "dataset=mnist_mini has classes 0..9; label each image with its "
                                                     "class in 0..9 (or leave arr_1 out)",
        (f"images={classes}", "dataset=mnist_mini"): f"error: images={classes}: class subfolder 57 is not one of "
                                                     "dataset=mnist_mini's classes 0..9; name the class subfolders 0..9 "
                                                     "(or put the images in one folder, unlabelled)",
        (f"images={few}", "dataset=mnist_mini"): f"error: images={few} holds 4 images, too few to measure: the metrics "
                                                 "need more than metrics.kmeans_k=10 (e.g. 2000)",
    }
    for overrides, line in cases.items():
        cfg = compose_run_config(tmp_path, list(overrides), root_dir=ROOT, config_name="evaluate")
        with pytest.raises(SystemExit) as stopped:
            evaluate_main(cfg)
        assert stopped.value.code == 2
        assert capsys.readouterr().err.strip() == line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes", "empty.npz", "few.npz", "floats.npz", "grey",
                                                          "outside.npz", "short.npz"]  # nothing written: no <name>_metrics folder


def test_an_export_of_a_progressive_generator_mid_growth_holds_what_the_metrics_measure(tmp_path):
    """Mid-growth a progressive G renders below the data's size (4x4 of 32x32 here); evaluate.py ckpt= measures its
    samples scaled up to 32x32, so the export holds those: the data's size, each of G's pixels an 8x8 block."""
    run = tmp_path / "run"
    train(compose_config(run, [*FAST, "model=progressive"]))  # 64 images: far from the first growth
    npz = tmp_path / "grown.npz"
    export_samples(run, 60, npz, progress=False)
    generator = rebuild_generator(run)
    with torch.no_grad():
        drawn = generator(torch.randn(60, generator.latent_dim, generator=torch.Generator().manual_seed(0)))
    assert drawn.shape[-1] == 4  # still the first resolution
    pixels = torch.floor((drawn[:, 0].clamp(-1, 1) + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
    with np.load(npz, allow_pickle=False) as data:
        assert data["arr_0"].shape == (60, 32, 32, 1)
        np.testing.assert_array_equal(data["arr_0"][..., 0], pixels.repeat(8, axis=1).repeat(8, axis=2))
        manifest = json.loads(str(data["manifest"]))
    assert (manifest["image_shape"], manifest["generator_image_size"]) == ([1, 32, 32], 4)

    [from_checkpoint] = evaluate_in_process(tmp_path, f"ckpt={run}", "figures=false", "metrics.n_samples=60",
                                            "metrics.enabled=[classifier]").values()
    from_npz = evaluate_in_process(tmp_path, f"images={npz}", "dataset=mnist_mini", "metrics.enabled=[classifier]")
    assert from_npz["grown.npz"]["classifier/fid"] == pytest.approx(from_checkpoint["classifier/fid"], rel=1e-6, abs=1e-9)
