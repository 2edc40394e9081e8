"""The data path as a user meets it: folders of their own images and torchvision sets already on disk."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from dcgan_lab.data.sources import image_folder
from dcgan_lab.errors import DataError
from dcgan_lab.export import read_samples


def _halves(left: tuple, right: tuple, size=(32, 64)) -> np.ndarray:
    """An image (h, w) whose left half is colour `left` and right half `right`."""
    h, w = size
    pixels = np.zeros((h, w, len(left)), dtype=np.uint8)
    pixels[:, : w // 2], pixels[:, w // 2:] = left, right
    return pixels


def test_a_photo_with_an_exif_rotation_is_decoded_upright(tmp_path):
    """A phone stores a portrait photo sideways with an EXIF orientation tag; every viewer turns it upright, so
    must the lab (it trained on the sideways pixels)."""
    stored = np.zeros((32, 64, 3), dtype=np.uint8)
    stored[:16], stored[16:] = (255, 0, 0), (0, 0, 255)  # stored: red top, blue bottom
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation 6: turn 90 degrees clockwise to display -> blue left, red right
    (tmp_path / "photos").mkdir()
    image.save(tmp_path / "photos" / "IMG_0001.JPG", exif=exif, quality=100, subsampling=0)
    for read in (image_folder(str(tmp_path / "photos"), image_size=16, cache_dir=str(tmp_path / "cache"))[0],
                 read_samples(tmp_path / "photos")[0]):  # evaluate.py images=: the same reading
        left, right = read[0, :, :, :4].float().mean(dim=(1, 2)), read[0, :, :, -4:].float().mean(dim=(1, 2))
        assert left[2] > 240 and left[0] < 15 and right[0] > 240 and right[2] < 15, (left, right)


def test_transparent_pixels_are_white_whatever_colour_they_store(tmp_path):
    """PIL's convert drops alpha and keeps the colour transparent pixels happen to store (here green, in the wild
    black or an editor's leftovers): two sprites that look alike trained on different backgrounds."""
    folder = tmp_path / "sprites"
    folder.mkdir()
    Image.fromarray(_halves((255, 0, 0, 255), (0, 255, 0, 0)), "RGBA").save(folder / "a_rgba.png")
    palette = Image.fromarray(_halves((255, 0, 0), (0, 255, 0))).convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
    green = palette.getpixel((63, 0))
    palette.save(folder / "b_palette.png", transparency=green)  # a palette PNG (or GIF) with a transparent index
    for channels, white in ((3, [255, 255, 255]), (1, [255])):
        images, _ = image_folder(str(folder), image_size=16, channels=channels, cache_dir=str(tmp_path / "cache"))
        for image in images:
            assert image[:, :, -4:].flatten(1).unique(dim=1).T.tolist() == [white]
            assert image[:, :, :4].float().mean(dim=(1, 2)).tolist() == pytest.approx(
                [255, 0, 0] if channels == 3 else [76], abs=1)  # opaque red stays red (L: 0.299 * 255)


def test_hidden_files_are_left_out_and_symlinked_folders_followed(tmp_path, caplog):
    """What a real folder holds beside its images: macOS's `._<name>` twin of every file (warned about as
    unreadable), .DS_Store, a notebook's .ipynb_checkpoints/ copies (trained on twice); and folders linked in
    from elsewhere (left out), one of them a link back up the tree."""
    folder, elsewhere = tmp_path / "art", tmp_path / "elsewhere"
    for where, name, colour in ((folder, "a.PNG", 10), (folder / "sub", "b.jpg", 20), (elsewhere, "c.png", 30)):
        where.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (colour,) * 3).save(where / name)
    (folder / "._a.PNG").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (8, 8), (99,) * 3).save(folder / ".ipynb_checkpoints" / "a-checkpoint.png")
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    (folder / "sub" / "up").symlink_to(folder, target_is_directory=True)
    with caplog.at_level("WARNING"):
        images, _ = image_folder(str(folder), image_size=8, cache_dir=str(tmp_path / "cache"))
    assert images[:, 0, 0, 0].tolist() == [10, 30, 20]  # a.PNG, linked/c.png, sub/b.jpg
    assert "unreadable" not in caplog.text
    read, _ = read_samples(folder)  # evaluate.py images=: the same files
    assert sorted(read[:, 0, 0, 0].tolist()) == [10, 20, 30]


def test_celeba_whose_partition_file_leaves_a_split_empty_trains_on_all_its_images(make_cfg, tmp_path, caplog):
    """The first images of CelebA unpacked with its list_eval_partition.txt: all of them are in its training split
    (1..162770), none in validation. The run stopped at its first evaluation with an IndexError."""
    folder = tmp_path / "data" / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(1, 17):
        Image.fromarray(_halves((255, 0, 0), (0, 0, 255), size=(218, 178))).save(folder / f"{i:06d}.jpg")
    (folder.parent / "list_eval_partition.txt").write_text("".join(f"{i:06d}.jpg 0\n" for i in range(1, 162771)))
    cfg = make_cfg("dataset=celeba", f"paths.data_dir={tmp_path / 'data'}", f"paths.cache_dir={tmp_path / 'cache'}",
                   "dataset.image_size=16", "dataset.batch_size=8", "metrics=default", "metrics.enabled=[d_overfitting]",
                   "metrics.figures=false", "metrics.n_samples=16")
    from dcgan_lab.pipeline import train

    with caplog.at_level("WARNING"):
        result = train(cfg)
    assert result["g_steps"] == 2
    assert "list_eval_partition.txt puts none of the 16 images in" in caplog.text
    assert "in CelebA's validation split; that split is all of them, as without the file" in caplog.text


def _idx(path, array: np.ndarray) -> None:
    """An MNIST idx file (big-endian header: magic, then each dimension) of uint8 `array`."""
    header = np.array([0x800 + array.ndim, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_files_already_on_disk_train_offline_with_their_labels_and_pixels(make_cfg, tmp_path, name):
    from dcgan_lab.pipeline import build

    raw = tmp_path / "data" / {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name] / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 40), ("t10k", 20)):
        labels = np.arange(n) % 10
        _idx(raw / f"{prefix}-images-idx3-ubyte", np.repeat(labels * 25, 28 * 28).reshape(n, 28, 28))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    cfg = make_cfg(f"dataset={name}", f"paths.data_dir={tmp_path / 'data'}", "dataset.source.download=false")
    datamodule = build(cfg.dataset)
    for split, n in (("train", 40), ("test", 20)):
        data = datamodule.split(split)
        assert data.images.shape == (n, 1, 32, 32) and data.labels.tolist() == [i % 10 for i in range(n)]
        assert data.images[:, 0, 16, 16].tolist() == [25 * (i % 10) for i in range(n)]  # each digit's own pixels
        assert data.images[:, :, :2].max() == 0  # 28x28 padded with black to 32
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as info:
        build(make_cfg(f"dataset={name}", f"paths.data_dir={tmp_path / 'data'}", "dataset.source.download=false").dataset).split("test")
    assert str(info.value).endswith(f"raw/t10k-labels-idx1-ubyte (or t10k-labels-idx1-ubyte.gz) is missing; place the "
                                    f"4 files of {raw.parent.name} there, or let torchvision download them (it needs a "
                                    "network connection); offline, use dataset=mnist_mini")


def test_cifar10_files_that_are_not_the_originals_are_named_in_one_line(make_cfg, tmp_path):
    """torchvision reads CIFAR's pickles only once their md5 matches (a pickle can run code) and otherwise says
    "not found or corrupted" (or tries a download): the line names the file and what to do."""
    from dcgan_lab.pipeline import build

    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in ["data_batch_1", "data_batch_2", "test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"not the original")
    cfg = make_cfg("dataset=cifar10", f"paths.data_dir={tmp_path / 'data'}", "dataset.source.download=false")
    with pytest.raises(DataError) as info:
        build(cfg.dataset).split("train")
    assert str(info.value) == (
        f"could not load CIFAR10 from {tmp_path / 'data'}: {folder / 'data_batch_1'} is not the original file (its md5 "
        "differs from torchvision's): its files are pickles, which can run code, so only the originals are read; "
        f"unpack the original cifar-10-python.tar.gz into {tmp_path / 'data'}, or delete {folder} to download it "
        "again; offline, use dataset=mnist_mini")
    (folder / "data_batch_1").unlink()
    with pytest.raises(DataError, match=r"cifar-10-batches-py/data_batch_1 is missing; unpack cifar-10-python.tar.gz"):
        build(cfg.dataset).split("train")


def test_evaluate_reads_grey_samples_saved_as_rgb_and_names_a_file_it_cannot_read(tmp_path, capsys):
    """torchvision's save_image writes a grey sample as an RGB PNG (R = G = B): another code base's MNIST samples
    were refused as "32x32 RGB but dataset=mnist_mini is 32x32 grey"; a folder mixing grey and RGB files was
    "mixes image sizes ((32, 32) and (32, 32, 3))"; a broken file was a PIL traceback."""
    from torchvision.utils import save_image

    from dcgan_lab.config import compose_run_config
    from dcgan_lab.metrics.checkpoints import main as evaluate_main
    from tests.conftest import ROOT

    folder = tmp_path / "samples"
    folder.mkdir()
    digits = torch.rand(30, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    for i, digit in enumerate(digits):
        save_image(digit, folder / f"{i:03d}.png")
    Image.fromarray((digits[0, 0].numpy() * 255).astype(np.uint8)).save(folder / "030.png")  # one saved as grey
    assert Image.open(folder / "000.png").mode == "RGB"
    images, _ = read_samples(folder)
    assert images.shape == (31, 3, 32, 32)

    def evaluate(*overrides):
        cfg = compose_run_config(tmp_path, [f"images={folder}", "dataset=mnist_mini", "metrics.enabled=[clustering]",
                                            "metrics.figures=false", "device=cpu", *overrides], root_dir=ROOT,
                                 config_name="evaluate")
        return evaluate_main(cfg)

    evaluate()
    entry = json.loads((tmp_path / "samples_metrics" / "metrics.json").read_text())["samples"]
    assert entry["metrics/n_samples"] == 31 and "cluster/silhouette" in entry
    (folder / "031.png").write_bytes((folder / "000.png").read_bytes()[:60])  # cut short: a copy that failed
    with pytest.raises(SystemExit) as stopped:
        evaluate()
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == (f"error: images={folder}: cannot read {folder / '031.png'} (OSError); "
                                               "remove it, every image is measured")


def test_a_cache_folder_that_cannot_be_written_warns_and_trains(make_cfg, tmp_path, caplog):
    """A read-only (shared) cache folder stopped the run with a traceback after every image was decoded."""
    from dcgan_lab.pipeline import train

    folder = tmp_path / "art"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (20, 20), (30 * i, 0, 0)).save(folder / f"{i}.png")
    (tmp_path / "readonly").write_text("")  # a file where a folder should be: unwritable even for root
    cache = tmp_path / "readonly" / "cache"
    cfg = make_cfg("dataset=image_folder", f"dataset.path={folder}", "dataset.image_size=16", "dataset.batch_size=4",
                   f"paths.cache_dir={cache}")
    with caplog.at_level("WARNING"):
        assert train(cfg)["g_steps"] == 2
    assert (f"cannot write the decoded images to {cache / 'images'} (Not a directory); they are decoded again by the "
            "next run: set paths.cache_dir=<a writable folder> to keep them") in caplog.text


def test_celeba_as_kaggle_unpacks_it_nested_folder_and_csv_partition(tmp_path):
    """Kaggle's CelebA archive.zip unpacks to img_align_celeba/img_align_celeba/*.jpg with list_eval_partition.csv
    (a header, commas) beside it: dataset=celeba found no images there and asked for gdown."""
    from dcgan_lab.data.sources import celeba

    celeba_dir = tmp_path / "data" / "celeba"
    folder = celeba_dir / "img_align_celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        Image.fromarray(_halves((255, 0, 0), (0, 0, 255), size=(218, 178))).save(folder / f"{i:06d}.jpg")
    (celeba_dir / "list_eval_partition.csv").write_text("image_id,partition\n" + "".join(
        f"{i:06d}.jpg,{[0, 0, 0, 1, 2][i - 1]}\n" for i in range(1, 6)))
    train, _ = celeba(str(tmp_path / "data"), split="train", download=False, cache_dir=str(tmp_path / "cache"), image_size=16)
    valid, _ = celeba(str(tmp_path / "data"), split="test", download=False, cache_dir=str(tmp_path / "cache"), image_size=16)
    assert (len(train), len(valid)) == (3, 1)
    assert train[:, 0, :, :4].float().mean() > 240 and train[:, 2, :, -4:].float().mean() > 240  # red left, blue right


def test_decoding_a_folder_in_a_log_file_writes_two_lines_not_a_bar(make_cfg, tmp_path, capfd, caplog):
    """In a SLURM log or under nohup the decoding bar's redraws piled up on one line (thousands of them for
    CelebA), where the lab's own progress logs lines."""
    from dcgan_lab.pipeline import train

    folder = tmp_path / "art"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (20, 20), (30 * i, 0, 0)).save(folder / f"{i}.png")
    cfg = make_cfg("dataset=image_folder", f"dataset.path={folder}", "dataset.image_size=16", "dataset.batch_size=4",
                   f"paths.cache_dir={tmp_path / 'cache'}")
    with caplog.at_level("INFO", logger="dcgan_lab.data.sources"):
        train(cfg)
    assert "\r" not in capfd.readouterr().err
    assert [r.getMessage().split(" in ")[0] for r in caplog.records if r.name == "dcgan_lab.data.sources"] == [
        "decoding 8 image files once, into " + str(tmp_path / "cache" / "images"), "decoded 8 images"]


def test_celeba_as_pngs_with_the_jpeg_names_of_its_partition_file(tmp_path):
    """CelebA's own Drive also has img_align_celeba_png.7z: the same faces as PNGs, while list_eval_partition.txt
    names .jpg files. dataset=celeba read only *.jpg, found nothing and asked for gdown."""
    from dcgan_lab.data.sources import celeba

    folder = tmp_path / "data" / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i in range(1, 5):
        Image.fromarray(_halves((255, 0, 0), (0, 0, 255), size=(218, 178))).save(folder / f"{i:06d}.png")
        (folder / f"._{i:06d}.png").write_bytes(b"\x00\x05\x16\x07")  # macOS's twin on a shared drive
    (folder.parent / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n000004.jpg 2\n")
    train, _ = celeba(str(tmp_path / "data"), split="train", download=False, cache_dir=str(tmp_path / "cache"), image_size=16)
    valid, _ = celeba(str(tmp_path / "data"), split="test", download=False, cache_dir=str(tmp_path / "cache"), image_size=16)
    assert (len(train), len(valid)) == (2, 1)
    assert train[:, 0, :, :4].float().mean() > 250 and train[:, 2, :, -4:].float().mean() > 250  # red left, blue right


COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def _colour_classes(folder, per_class: int = 6) -> None:
    """`folder/<colour>/<i>.png`, one folder per colour of COLOURS, plus a white image directly in `folder` and a
    hidden `.thumbnails/` folder: neither is a class."""
    for name, colour in COLOURS.items():
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (20, 20), colour).save(folder / name / f"{i}.png")
    Image.new("RGB", (20, 20), (255, 255, 255)).save(folder / "stray.png")
    (folder / ".thumbnails").mkdir()
    Image.new("RGB", (20, 20), (0, 0, 0)).save(folder / ".thumbnails" / "0.png")


def test_subfolders_are_the_classes_of_a_conditional_image_folder_run(make_cfg, tmp_path, caplog):
    """dataset.labels=subfolders: a WikiArt-like `<path>/<style>/<image>` tree trains a conditional GAN, class k =
    the k-th subfolder by name, and its grids name each row's class. Image folders had no classes at all."""
    from dcgan_lab.pipeline import train

    folder = tmp_path / "art"
    _colour_classes(folder)
    cfg = make_cfg("dataset=image_folder", f"dataset.path={folder}", "dataset.labels=subfolders", "model.conditional=true",
                   "dataset.image_size=16", "dataset.batch_size=6", f"paths.cache_dir={tmp_path / 'cache'}")
    assert list(cfg.dataset.class_names) == ["blue", "green", "red"] and cfg.model.num_classes == 3
    with caplog.at_level("WARNING", logger="dcgan_lab.data.sources"):
        result = train(cfg)
    assert result["g_steps"] == 3  # 18 images in class folders, batches of 6
    assert ("left out 1 image(s) directly in dataset.path=" + str(folder) + ", e.g. stray.png: with "
            "dataset.labels=subfolders an image's class is the subfolder it is in") in caplog.text

    datamodule = instantiate(cfg.dataset)
    data = datamodule.split("train")
    colour_of = {tuple(COLOURS[name]): k for k, name in enumerate(["blue", "green", "red"])}
    assert [colour_of[tuple(int(v) for v in image[:, 8, 8])] for image in data.images] == data.labels.tolist()
    assert data.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6

    grid = np.asarray(Image.open(tmp_path / "run" / "samples" / "last.png").convert("RGB"))
    assert grid.shape[0] == 3 * (16 + 2) + 2  # one row per class: 64 samples -> 22 per class
    strip = grid[:, : grid.shape[1] - (22 * 18 + 2)]  # the class names, left of the images
    rows_with_text = [bool((strip[2 + r * 18: 2 + r * 18 + 16] > 128).any()) for r in range(3)]
    assert strip.shape[1] > 20 and rows_with_text == [True, True, True]
    written = (tmp_path / "run" / "config.yaml").read_text()
    assert "class_names:\n  - blue\n  - green\n  - red\n  num_classes: 3" in written


def test_an_image_folder_is_labelled_by_the_class_list_of_its_run_config(tmp_path):
    """The run's config keeps the classes it trained on, and evaluate.py builds the data from it: a class folder
    added or emptied afterwards would shift what label k means, and is one line instead."""
    folder = tmp_path / "art"
    _colour_classes(folder, per_class=2)
    common = dict(image_size=8, cache_dir=str(tmp_path / "cache"))
    images, labels = image_folder(str(folder), classes=["blue", "green", "red"], **common)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2] and images[:, 2, 4, 4].tolist() == [255, 255, 0, 0, 0, 0]
    assert image_folder(str(folder), **common)[1] is None  # unlabelled: all 7 images, subfolders mean nothing
    with pytest.raises(DataError, match=r"^dataset.path=.*: folder 'red' is not one of the 2 classes in "
                                        r"dataset.class_names \(the run's config keeps the classes it trained on\)"):
        image_folder(str(folder), classes=["blue", "green"], **common)
    for f in (folder / "green").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"^dataset.path=.*: class folder 'green' holds no images \(1 of the 3 classes"):
        image_folder(str(folder), classes=["blue", "green", "red"], **common)


def test_the_metrics_classifier_of_a_labelled_image_folder_says_its_accuracy_is_on_training_images(make_cfg, tmp_path, caplog):
    """An image folder has one split, so the classifier's "test accuracy" was measured on the images it trained on
    and logged as a test split's."""
    from dcgan_lab.metrics.classifier import load_or_train_classifier

    _colour_classes(tmp_path / "art")
    cfg = make_cfg("dataset=image_folder", f"dataset.path={tmp_path / 'art'}", "dataset.labels=subfolders",
                   "dataset.image_size=16", f"paths.cache_dir={tmp_path / 'cache'}")
    with caplog.at_level("INFO", logger="dcgan_lab.metrics.classifier"):
        _, record = load_or_train_classifier(instantiate(cfg.dataset), tmp_path / "cache", epochs=1)
    assert record["test_is_train"] is True and record["num_classes"] == 3
    assert f"metrics classifier: accuracy {record['test_accuracy']:.4f} on image_folder's training images (it has no " \
           "test split)" in caplog.text


def test_the_clustering_study_looks_for_as_many_clusters_as_a_labelled_folder_has_classes(make_cfg, tmp_path):
    """metrics.kmeans_k was 10 whatever the data: KMeans looked for 10 clusters in a 3-style (or 27-style) WikiArt."""
    _colour_classes(tmp_path / "art")
    folder = ["dataset=image_folder", f"dataset.path={tmp_path / 'art'}"]
    assert make_cfg(*folder, "dataset.labels=subfolders").metrics.kmeans_k == 3
    assert make_cfg(*folder).metrics.kmeans_k == 10  # unlabelled: the default
    assert make_cfg(*folder, "dataset.labels=subfolders", "metrics.kmeans_k=5").metrics.kmeans_k == 5  # a choice wins
    assert make_cfg("dataset=mnist_mini").metrics.kmeans_k == make_cfg("dataset=photo_patches").metrics.kmeans_k == 10
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    Image.new("RGB", (20, 20), (255, 0, 0)).save(one / "only" / "0.png")
    assert make_cfg("dataset=image_folder", f"dataset.path={one}", "dataset.labels=subfolders").metrics.kmeans_k == 2

def test_an_image_replaced_by_cp_p_is_decoded_again(tmp_path):
    """`cp -p` (or rsync -t) keeps a file's size and mtime: the cache, keyed by path, size and mtime, gave the
    old image's pixels for the new one. The file's ctime, which no copy can set, is in the key now."""
    import os
    import shutil

    folder, new = tmp_path / "art", tmp_path / "new"
    folder.mkdir()
    new.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20), (255, 0, 0)).save(folder / f"{i}.bmp")
    Image.new("RGB", (20, 20), (0, 0, 255)).save(new / "1.bmp")
    assert (new / "1.bmp").stat().st_size  # BMP: no compression == (folder / "1.bmp").stat().st_size
    common = dict(image_size=8, cache_dir=str(tmp_path / "cache"))
    before = image_folder(str(folder), **common)[0]
    assert before[:, 0, 4, 4].tolist() == [255, 255, 255]
    mtime_ns = (folder / "1.bmp").stat().st_mtime_ns
    shutil.copy2(new / "1.bmp", folder / "1.bmp")  # cp -p
    os.utime(folder / "1.bmp", ns=(mtime_ns, mtime_ns))  # the same mtime, as when both came from one archive
    after = image_folder(str(folder), **common)[0]
    assert after[:, 0, 4, 4].tolist() == [255, 0, 255] and after[:, 2, 4, 4].tolist() == [0, 255, 0]


def test_a_folder_decoded_again_after_a_change_removes_its_own_older_caches_only(tmp_path):
    """Each edit of a folder (an image added) left a whole decoded copy of it behind in paths.cache_dir, forever.
    Now the folder's new cache replaces its older ones; other folders', other sizes' and a writing run's
    temporary file stay."""
    art, other = tmp_path / "art", tmp_path / "other"
    for folder in (art, other):
        folder.mkdir()
        for i in range(3):
            Image.new("RGB", (20, 20), (40 * i, 0, 0)).save(folder / f"{i}.png")
    cache = tmp_path / "cache"
    common = dict(cache_dir=str(cache))
    image_folder(str(other), image_size=8, **common)
    image_folder(str(art), image_size=16, **common)
    image_folder(str(art), image_size=8, **common)
    images = cache / "images"
    writing = images / f".{sorted(images.glob('*.npy'))[0].stem}.4242.tmp.npy"  # another run's write, under way
    writing.write_bytes(b"")
    kept = sorted(p.name for p in images.iterdir())
    assert len(kept) == 7  # 3 sets x (.npy + .unreadable.json), and the temporary file
    Image.new("RGB", (20, 20), (0, 255, 0)).save(art / "3.png")
    assert len(image_folder(str(art), image_size=8, **common)[0]) == 4
    now = sorted(p.name for p in images.iterdir())
    assert len(now) == 7 and len(set(now) - set(kept)) == 2  # the 8-pixel art set's two files were replaced
    assert writing.exists() and len(image_folder(str(art), image_size=16, **common)[0]) == 4
    assert len(list(images.glob("[!.]*.npy"))) == 3  # art at 8 and 16 pixels, other


def test_caches_named_the_way_of_an_earlier_version_are_removed(tmp_path):
    """Before sets had their own part, a cache was `<md5>.npy` (+ `.unreadable.json`): no run reads those now, and
    nothing removed them."""
    art = tmp_path / "art"
    art.mkdir()
    Image.new("RGB", (20, 20), (255, 0, 0)).save(art / "0.png")
    images = tmp_path / "cache" / "images"
    images.mkdir(parents=True)
    old = [images / "0123456789abcdef0123456789abcdef.npy", images / "0123456789abcdef0123456789abcdef.unreadable.json"]
    for path in old:
        path.write_bytes(b"stale")
    unrelated = images / "notes.npy"
    unrelated.write_bytes(b"kept")
    image_folder(str(art), image_size=8, cache_dir=str(tmp_path / "cache"))
    assert not any(path.exists() for path in old) and unrelated.exists()
    assert len(list(images.glob("*-*.npy"))) == 1  # the folder's own, named <set>-<files>.npy
