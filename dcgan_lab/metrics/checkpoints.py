"""evaluate.py's work: every enabled metric for generators saved in GANModule checkpoints.

A checkpoint carries the resolved run config (checkpoint["lab_config"]), so G, D and the dataset are
rebuilt from it with hydra.utils.instantiate; the EMA generator is used when the checkpoint has one.
Checkpoints are read by the one reader training and resume use (checkpoint_io.read_checkpoint): tensors and
plain data only, so a checkpoint from elsewhere cannot run code when it is opened. With figures on, each
checkpoint also gets the run's latent walk (`write_walk`), drawn from its fixed latents by the saved G.
`images=` measures a folder or .npz of images instead (`evaluate_images`): any model's samples, against a dataset.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import sys
from pathlib import Path
from typing import NamedTuple

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dcgan_lab.atomic import replaced_atomically, write_text_atomically
from dcgan_lab.callbacks.samples import save_png, walk_grid
from dcgan_lab.checkpoint_io import check_architecture, read_checkpoint
from dcgan_lab.config import override_key
from dcgan_lab.errors import ConfigError, DataError, LabError
from dcgan_lab.metrics.suite import MetricSuite, defaults, fewest_samples, generate
from dcgan_lab.nets.ema import sampling_generator
from dcgan_lab.sweep import job_overrides

log = logging.getLogger(__name__)


def find_checkpoints(pattern) -> list[Path]:
    """A file, a run folder (its checkpoints/*.ckpt), a sweep folder (each job's checkpoints/last.ckpt), a glob, or
    a list of those."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern or [])
    found: list[Path] = []
    for p in patterns:
        path = Path(str(p)).expanduser()
        if path.is_dir():
            inside = (sorted(path.glob("checkpoints/*.ckpt")) or sorted(path.glob("*.ckpt"))
                      or sorted(path.rglob("checkpoints/last.ckpt")))
            found += inside
        else:
            found += [Path(m) for m in sorted(glob.glob(str(path), recursive=True)) if m.endswith(".ckpt")]
    if not found:
        raise ConfigError(f"ckpt={pattern} matches no .ckpt file; pass a checkpoint, a run folder or a glob "
                          "(e.g. ckpt='outputs/*/*/checkpoints/last.ckpt')")
    return list(dict.fromkeys(p.resolve() for p in found))


def _network(config: dict, name: str, state_dict: dict, prefix: str, path: Path):
    """config["model"][name] rebuilt and loaded with the state_dict entries under `prefix`."""
    network = instantiate(config["model"][name])
    weights = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    check_architecture(network, weights, str(path))  # one line naming the keys, not a strict-load traceback
    network.load_state_dict(weights)
    return network


class SavedGAN(NamedTuple):
    generator: torch.nn.Module         # the EMA copy when the checkpoint has one
    discriminator: torch.nn.Module
    config: dict                       # the resolved run config the checkpoint carries
    info: dict                         # what metrics.json records about the checkpoint
    fixed_z: torch.Tensor              # the run's fixed latents (its sample grids and walks)
    fixed_labels: torch.Tensor | None  # their classes for a conditional G


def load_generator(path: Path, device="cpu") -> SavedGAN:
    """G, D, the run config and the fixed latents, rebuilt from a GANModule checkpoint."""
    checkpoint = read_checkpoint(path)
    config = checkpoint.get("lab_config")
    if not isinstance(config, dict):
        raise DataError(f"{path} has no lab_config (not saved by this lab's GANModule); evaluate.py needs it to rebuild G")
    state = checkpoint["state_dict"]
    has_ema = any(k.startswith("generator_ema.") for k in state)
    ema = _network(config, "generator", state, "generator_ema.", path) if has_ema else None
    generator = sampling_generator(_network(config, "generator", state, "generator.", path), ema)
    discriminator = _network(config, "discriminator", state, "discriminator.", path)
    n_critic = config.get("training", {}).get("n_critic", 1)
    info = {
        "checkpoint": str(path),
        "generator": "generator_ema" if generator is ema else "generator",
        "epoch": checkpoint.get("epoch"),
        "g_step": checkpoint.get("batches_seen", 0) // n_critic,
    }
    return SavedGAN(generator.to(device), discriminator.to(device), config, info, state["fixed_z"], state.get("fixed_labels"))


def run_metrics_seed(config: dict) -> int:
    """The metrics.seed the saved run measured itself with: its evaluations' latents and their random draws (clusters,
    real subsets). evaluate.py and the export draw with it again, so they measure what the run logged."""
    return int((config.get("metrics") or {}).get("seed", defaults()["seed"]))


def seed_given() -> bool:
    """Whether the command line chose metrics.seed (then it applies to every checkpoint, whatever its run used)."""
    return any(override_key(override) == "metrics.seed" for override in job_overrides())


def write_walk(saved: SavedGAN, path: Path, batch_size: int, device) -> Path | None:
    """The run's latent walk (callbacks.sample_grid's walk_rows, walk_steps, spherical; the defaults when its config
    has none) drawn by the saved G into `path`; None when the run turned it off (walk_rows=0)."""
    grid_settings = (saved.config.get("callbacks") or {}).get("sample_grid") or {}
    walk = {name: grid_settings[key] for name, key in (("rows", "walk_rows"), ("steps", "walk_steps"),
                                                       ("spherical", "spherical")) if key in grid_settings}
    if walk.get("rows") == 0:
        return None
    grid = walk_grid(lambda z, labels: generate(saved.generator, z, labels, batch_size, device),
                     saved.fixed_z, saved.fixed_labels, **walk)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp:
        save_png(grid, tmp)
    return path


def device_named(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)


def _table(columns: dict[str, dict[str, float]]) -> str:
    names = sorted({k for scalars in columns.values() for k in scalars})
    labels = list(columns)
    width = max([len(n) for n in names] + [6])
    col = [max(len(label), 10) for label in labels]
    lines = [" ".join([f"{'metric':<{width}}", *(f"{label:>{w}}" for label, w in zip(labels, col))])]
    lines.append("-" * len(lines[0]))
    for name in names:
        cells = [f"{columns[label][name]:>{w}.4g}" if name in columns[label] else f"{'-':>{w}}" for label, w in zip(labels, col)]
        lines.append(" ".join([f"{name:<{width}}", *cells]))
    return "\n".join(lines)


def _labels(paths: list[Path]) -> dict[Path, str]:
    """Each checkpoint's column in the table: `<run folder>/<checkpoint>`; where two runs share a folder name (a
    sweep job whose override held a path, e.g. paths.cache_dir=/x/.cache, nests its folder), the run's path below
    the folder all of them share."""
    runs = {path: path.parent.parent if path.parent.name == "checkpoints" else path.parent for path in paths}
    labels = {path: f"{run.name}/{path.stem}" for path, run in runs.items()}
    if len(set(labels.values())) < len(labels):
        common = Path(os.path.commonpath([str(run) for run in runs.values()]))
        labels = {path: f"{run.relative_to(common) if run != common else run.name}/{path.stem}" for path, run in runs.items()}
    return labels


def evaluate(cfg: DictConfig) -> dict[str, dict]:
    """Metrics for every checkpoint matched by cfg.ckpt, or for the images in cfg.images; prints a table and
    writes metrics.json (beside each checkpoint; in <images>_metrics/)."""
    if (cfg.get("ckpt") is None) == (cfg.get("images") is None):
        raise ConfigError("evaluate.py measures ckpt=<checkpoint, run or sweep folder, or glob> or images=<folder or .npz> "
                          "dataset=<its data>: give one of them")
    settings = OmegaConf.to_container(cfg.metrics, resolve=True)
    device = device_named(cfg.device)
    results = evaluate_checkpoints(cfg, settings, device) if cfg.get("ckpt") is not None else evaluate_images(cfg, settings, device)
    print(_table({label: {k: v for k, v in entry.items() if isinstance(v, float) and k != "metrics/eval_time_s"}
                  for label, entry in results.items()}))
    for line in dict.fromkeys(_inception_line(entry) for entry in results.values()):
        if line:
            print(line)
    return results


def evaluate_checkpoints(cfg: DictConfig, settings: dict, device: torch.device) -> dict[str, dict]:
    suites: dict[str, MetricSuite] = {}
    results: dict[str, dict] = {}
    paths = find_checkpoints(cfg.ckpt)
    labels = _labels(paths)
    keep_seed = seed_given()
    for path in paths:
        saved = load_generator(path, device)
        # The run's own metrics.seed unless the command line gives one: the latents its logged numbers came from.
        measured = settings if keep_seed else {**settings, "seed": run_metrics_seed(saved.config)}
        dataset_key = json.dumps([saved.config["dataset"], measured["seed"]], sort_keys=True)
        if dataset_key not in suites:  # one suite per dataset: classifier and reference statistics load once
            suites[dataset_key] = MetricSuite(measured, instantiate(saved.config["dataset"]), cfg.paths.cache_dir, device=device)
        info = saved.info
        log.info("evaluating %s (%s, epoch %s, %s G steps)", path, info["generator"], info["epoch"], info["g_step"])
        figures = path.parent / f"{path.stem}_metrics" if cfg.figures else None
        report = suites[dataset_key].evaluate(saved.generator, saved.discriminator, inception=True, figures_dir=figures)
        if figures is not None and (walk := write_walk(saved, figures / "interpolation.png", settings["batch_size"], device)):
            log.info("wrote %s", walk)
        entry = {**info, **report.scalars, **report.extras}
        _write_json(path.parent / "metrics.json", path.name, entry)
        results[labels[path]] = entry
    return results


def evaluate_images(cfg: DictConfig, settings: dict, device: torch.device) -> dict[str, dict]:
    """Every enabled metric for a folder or .npz of images (any model's samples, or an export) against
    dataset=<name>, all of the images (metrics.n_samples does not apply); the discriminator's metrics are skipped."""
    from dcgan_lab.export import check_labels, export_seed, read_samples

    if cfg.get("dataset") is None:
        raise ConfigError(f"images={cfg.images} needs dataset=<the data the images imitate> to measure them against, "
                          "e.g. dataset=mnist_mini (and dataset.image_size=<their size> where it differs)")
    path = Path(str(cfg.images)).expanduser().resolve()
    images, labels = read_samples(path)
    datamodule = instantiate(cfg.dataset)
    if datamodule.channels == 1 and images.shape[1] == 3 and torch.equal(images.amin(1), images.amax(1)):
        images = images[:, :1]  # grey samples saved as RGB (torchvision's save_image writes grey images so)
    found, expected = tuple(images.shape[1:]), (datamodule.channels, datamodule.image_size, datamodule.image_size)
    if found != expected:
        raise DataError(f"images={cfg.images} are {_shape(found)} but dataset={datamodule.name} is {_shape(expected)}; "
                        "measure them against data of their shape (dataset.image_size=<their size> resizes the data)")
    check_labels(path, labels, datamodule.num_classes, datamodule.name)
    key, k = fewest_samples(settings)
    if len(images) <= k:  # all of them are measured, so metrics.n_samples's check does not cover them
        raise DataError(f"images={cfg.images} holds {len(images)} images, too few to measure: the metrics need more than "
                        f"metrics.{key}={k} (e.g. 2000)")
    if not seed_given() and (seed := export_seed(path)) is not None:
        # An export's seed is its run's metrics.seed: the clusters' and real subsets' draws its checkpoint was measured with.
        settings = {**settings, "seed": seed}
    log.info("evaluating %d images from %s against %s", len(images), path, datamodule.name)
    folder = path.parent / f"{path.stem}_metrics"
    suite = MetricSuite(settings, datamodule, cfg.paths.cache_dir, device=device)
    report = suite.measure(images, labels, inception=True, figures_dir=folder if cfg.figures else None)
    entry = {"images": str(path), "dataset": datamodule.name, **report.scalars, **report.extras}
    _write_json(folder / "metrics.json", path.name, entry)
    return {path.name: entry}


def _shape(shape: tuple[int, int, int]) -> str:
    channels, height, width = shape
    return f"{height}x{width} {'grey' if channels == 1 else 'RGB' if channels == 3 else f'{channels}-channel'}"


def _inception_line(entry: dict) -> str | None:
    """One line naming what the Inception numbers were computed with (also in metrics.json)."""
    if "inception/extractor" not in entry:
        return entry.get("inception_skipped")
    line = (f"Inception: {entry['inception/extractor']}; weights {entry['inception/weights']}, md5 {entry['inception/weights_md5']}; "
            f"{entry['inception/n_generated']} generated vs {entry['inception/n_reference']} real images")
    return f"{line}\n{entry['is_skipped']}" if "is_skipped" in entry else line


def _write_json(target: Path, key: str, entry: dict) -> None:
    """metrics.json: {checkpoint or image file name: its metrics}, merged, written atomically."""
    existing = {}
    if target.exists():
        try:
            existing = json.loads(target.read_text())
        except json.JSONDecodeError:
            log.warning("%s was not valid JSON; rewriting it", target)
    existing[key] = entry
    write_text_atomically(json.dumps(existing, indent=2, sort_keys=True), target)
    log.info("wrote %s", target)


def main(cfg: DictConfig):
    """CLI entry: a LabError becomes one line on stderr and exit status 2."""
    try:
        return evaluate(cfg)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
