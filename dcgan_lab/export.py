"""Samples of a saved generator as files other tools read, and those files read back.

    python -m dcgan_lab.export outputs/<date>/<time> --n 50000 --out samples/       # a folder of PNGs
    python -m dcgan_lab.export outputs/<date>/<time>/checkpoints/last.ckpt --n 50000 --out samples.npz

A folder holds one PNG per image (grey or RGB, at the run's dataset.image_size): `000000.png`, ...; a
class-conditional G's images go into one subfolder per class (`<out>/3/000123.png`; `03` of 12 classes), the layout
torchvision's ImageFolder reads labels from. A `.npz` file holds `arr_0` (N, H, W, C) uint8 and, for a conditional G,
`arr_1` (N,) labels: the layout of the ADM/guided-diffusion FID evaluator. Either way `export.json` (inside the
folder; the npz's `manifest` entry) names the checkpoint, the generator used (the EMA copy when it has one), its epoch
and G steps, the seed.

The latents are the ones evaluate.py draws (`sample_latents`, the run's `metrics.seed` unless --seed), and the
pixels the ones it measures (`to_uint8`; a progressive G mid-growth scaled up to the data's size by `at_data_size`,
its own size in the manifest's `generator_image_size`), so `python evaluate.py images=<export> dataset=<the run's>`
gives the checkpoint's own numbers, and the files can go to any other FID tool. An export is whole or absent: it is
written under a temporary name and renamed when complete, and an existing --out is never overwritten.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from dcgan_lab.atomic import replaced_atomically
from dcgan_lab.data.datamodule import to_uint8
from dcgan_lab.data.sources import IMAGE_SUFFIXES, UNREADABLE_IMAGE, WIDE_GREY, as_displayed, image_files
from dcgan_lab.errors import ConfigError, DataError, LabError

MANIFEST = "export.json"


def pick_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run folder's checkpoints/last.ckpt."""
    path = Path(path).expanduser()
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
            if candidate.is_file():
                return candidate.resolve()
        raise ConfigError(f"{path} holds no checkpoints/last.ckpt; pass a run folder or a .ckpt file")
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass a run folder or a .ckpt file")
    return path.resolve()


def export_samples(checkpoint: str | os.PathLike, n: int, out: str | os.PathLike, seed: int | None = None,
                   batch_size: int | None = None, device: str = "auto", progress: bool = True) -> Path:
    """n samples of the G saved in `checkpoint` (file or run folder) written to `out` (a folder, or a .npz file)."""
    from tqdm import tqdm

    from dcgan_lab.metrics.checkpoints import device_named, load_generator, run_metrics_seed
    from dcgan_lab.metrics.suite import at_data_size, generate, sample_latents

    if n < 1:
        raise ConfigError(f"--n {n}: export at least one image")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: G needs at least one latent per batch")
    out = Path(out).expanduser()
    if out.exists():
        raise ConfigError(f"--out {out} exists; choose a new path or remove it (an export never overwrites)")
    path = pick_checkpoint(checkpoint)
    device = device_named(device)
    saved = load_generator(path, device)
    metric_settings = saved.config.get("metrics") or {}
    seed = run_metrics_seed(saved.config) if seed is None else seed
    batch_size = batch_size or metric_settings.get("batch_size", 256)
    z, labels = sample_latents(saved.generator, n, seed)
    manifest = {**saved.info, "seed": seed, "n": n, "latents": "dcgan_lab.metrics.suite.sample_latents",
                "classes": getattr(saved.generator, "num_classes", 0) or None}
    size = saved.config["dataset"]["image_size"]

    def chunks():
        for start in tqdm(range(0, n, batch_size), desc=f"exporting {n} samples", unit="batch", disable=not progress):
            pixels = to_uint8(generate(saved.generator, z[start : start + batch_size],
                                       None if labels is None else labels[start : start + batch_size], batch_size, device))
            if pixels.shape[-1] != size:  # a progressive G mid-growth: the metrics measure it scaled up, so export that
                manifest.update(generator_image_size=pixels.shape[-1], scaled_by="dcgan_lab.metrics.suite.at_data_size")
            yield start, at_data_size(pixels, size)

    if out.suffix == ".npz":
        _write_npz(out, chunks(), labels, manifest)
    else:
        _write_folder(out, chunks(), labels, n, manifest)
    return out


def _name(index: int, n: int) -> str:
    return f"{index:0{max(6, len(str(n - 1)))}d}.png"


def _class_folder(label: int, classes: int) -> str:
    # Zero-padded ("03" of 12 classes): ImageFolder numbers classes in the folders' sorted (string) order.
    return f"{label:0{len(str(classes - 1))}d}"


def _png(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(path, format="PNG")


def _write_folder(out: Path, chunks, labels: torch.Tensor | None, n: int, manifest: dict) -> None:
    partial = out.with_name(f".{out.name}.partial")  # a killed export leaves this, never a folder named `out`
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    folders = ([partial] * n if labels is None
               else [partial / _class_folder(label, manifest["classes"]) for label in labels.tolist()])
    try:
        for folder in set(folders):
            folder.mkdir(exist_ok=True)
        for start, images in chunks:
            for index, image in enumerate(images, start):
                _png(image, folders[index] / _name(index, n))
        manifest["image_shape"] = list(images.shape[1:])
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2))
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _write_npz(out: Path, chunks, labels: torch.Tensor | None, manifest: dict) -> None:
    """The layout np.savez writes (an uncompressed zip of .npy members), streamed: one batch in memory at a time
    (50,000 256x256 RGB images are 9.8 GB)."""
    with replaced_atomically(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("arr_0.npy", "w", force_zip64=True) as member:
            for start, chunk in chunks:
                pixels = chunk.permute(0, 2, 3, 1).contiguous().numpy()  # (B, H, W, C), as the ADM evaluator reads
                if start == 0:  # the header needs the total shape: N from the latents, H, W, C from G's first batch
                    manifest["image_shape"] = list(chunk.shape[1:])
                    header = np.lib.format.header_data_from_array_1_0(pixels)
                    np.lib.format.write_array_header_1_0(member, {**header, "shape": (manifest["n"], *pixels.shape[1:])})
                member.write(pixels.tobytes())
        arrays = {"manifest": np.array(json.dumps(manifest))}
        if labels is not None:
            arrays["arr_1"] = labels.numpy()
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def read_samples(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(uint8 images (N, C, H, W), labels (N,) or None) from a folder of images or a .npz file: an export of this
    lab's or any other tool's. A folder's images are read in sorted order, unchanged (no resizing); they must
    share one size. Labels come from class subfolders named 0, 1, ... (an export of a conditional G) or arr_1."""
    path = Path(path).expanduser()
    if path.suffix == ".npz" and path.is_file():
        return _read_npz(path)
    if not path.is_dir():
        raise ConfigError(f"images={path} is neither a folder of images nor a .npz file")
    # By file name first: an export's names are its sample indices, whichever class folder holds them.
    files = sorted(image_files(path), key=lambda p: (p.name, str(p)))
    if not files:
        raise DataError(f"images={path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    from PIL import Image

    arrays = []
    for file in files:
        try:
            with Image.open(file) as image:
                arrays.append(np.asarray(as_displayed(image, "L" if image.mode in ("1", "L", "LA", *WIDE_GREY) else "RGB")))
        except UNREADABLE_IMAGE as exc:
            raise DataError(f"images={path}: cannot read {file} ({type(exc).__name__}); remove it, every image is "
                            "measured") from None
    if len({a.ndim for a in arrays}) > 1:  # grey and colour files: all as RGB (grey ones spread over 3 channels)
        arrays = [np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a for a in arrays]
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise DataError(f"images={path} mixes image sizes ({shapes[0]} and {shapes[-1]}, ...); metrics compare one size")
    images = torch.from_numpy(np.stack(arrays))
    images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
    classes = [file.parent.relative_to(path).as_posix() for file in files]
    labels = torch.tensor([int(c) for c in classes]) if all(c.isdigit() for c in classes) else None
    return images.contiguous(), labels


def export_seed(path: str | os.PathLike) -> int | None:
    """The seed an export of this lab's was drawn with (its manifest's), None for images from elsewhere."""
    path = Path(path).expanduser()
    try:
        if path.suffix == ".npz" and path.is_file():
            with np.load(path, allow_pickle=False) as data:
                manifest = json.loads(str(data["manifest"])) if "manifest" in data.files else {}
        else:
            manifest = json.loads((path / MANIFEST).read_text()) if (path / MANIFEST).is_file() else {}
    except (ValueError, OSError, zipfile.BadZipFile):  # not one of ours: read_samples says what is wrong with it
        return None
    seed = manifest.get("seed") if isinstance(manifest, dict) else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def check_labels(path: str | os.PathLike, labels: torch.Tensor | None, classes: int, dataset: str) -> None:
    """Refuses labels that `read_samples(path)` read outside the dataset's classes 0..classes-1 (a dataset without
    classes uses none, and checks none)."""
    if labels is None or not classes or not len(labels):
        return
    outside = labels[(labels < 0) | (labels >= classes)]
    if not len(outside):
        return
    path, label, span = Path(path).expanduser(), int(outside[0]), f"0..{classes - 1}"
    if path.suffix == ".npz" and path.is_file():
        raise DataError(f"images={path}: arr_1 holds label {label}, but dataset={dataset} has classes {span}; "
                        f"label each image with its class in {span} (or leave arr_1 out)")
    folder = next(p.name for p in sorted(path.iterdir()) if p.is_dir() and p.name.isdigit() and int(p.name) == label)
    raise DataError(f"images={path}: class subfolder {folder} is not one of dataset={dataset}'s classes {span}; "
                    f"name the class subfolders {span} (or put the images in one folder, unlabelled)")


def _read_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    try:
        with np.load(path, allow_pickle=False) as data:  # arrays only: a file from elsewhere runs no code
            if "arr_0" not in data.files:
                raise DataError(f"images={path} has no arr_0 (the (N, H, W, C) uint8 images); it holds {data.files}")
            images, labels = data["arr_0"], data["arr_1"] if "arr_1" in data.files else None
    except (ValueError, OSError, zipfile.BadZipFile) as exc:  # pickled objects, or not an .npz at all
        raise DataError(f"images={path} is not an .npz of plain arrays ({str(exc).splitlines()[0]}); "
                        "save it with numpy.savez(arr_0=<uint8 N, H, W, C images>)") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"images={path}: arr_0 is {images.dtype} {images.shape}; expected uint8 (N, H, W, 1 or 3)")
    if len(images) == 0:
        raise DataError(f"images={path}: arr_0 holds no images {images.shape}; expected at least one uint8 (N, H, W, "
                        f"{images.shape[-1]}) image")
    if labels is not None and (labels.shape != (len(images),) or labels.dtype.kind not in "iu"):
        raise DataError(f"images={path}: arr_1 is {labels.dtype} {labels.shape}; expected ({len(images)},) integer "
                        f"labels, one per image of arr_0 (or no arr_1)")
    return (torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            None if labels is None else torch.from_numpy(labels.astype(np.int64)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcgan_lab.export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a .ckpt file, or a run folder (its checkpoints/last.ckpt)")
    parser.add_argument("--n", type=int, default=10000, help="how many samples (default 10000; 50000 for FID-50k)")
    parser.add_argument("--out", required=True, help="a new folder (one PNG per image) or a .npz file")
    parser.add_argument("--seed", type=int, default=None, help="the latents' seed (default: the run's metrics.seed, "
                                                               "the latents evaluate.py measures)")
    parser.add_argument("--batch-size", type=int, default=None, help="G's batch (default: the run's metrics.batch_size)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    try:
        out = export_samples(args.checkpoint, args.n, args.out, args.seed, args.batch_size, args.device)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.n} samples to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
