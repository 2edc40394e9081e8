"""evaluate.py's work: every enabled metric for generators saved in GANModule checkpoints.

A checkpoint carries the resolved run config (checkpoint["lab_config"]), so G, D and the dataset are
rebuilt from it with hydra.utils.instantiate; the EMA generator is used when the checkpoint has one.
Checkpoints are read by the one reader training and resume use (checkpoint_io.read_checkpoint): tensors and
plain data only, so a checkpoint from elsewhere cannot run code when it is opened.
"""
from __future__ import annotations

import glob
import json
import logging
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dcgan_lab.atomic import write_text_atomically
from dcgan_lab.checkpoint_io import check_architecture, read_checkpoint
from dcgan_lab.errors import ConfigError, DataError, LabError
from dcgan_lab.metrics.suite import MetricSuite
from dcgan_lab.nets.ema import sampling_generator

log = logging.getLogger(__name__)


def find_checkpoints(pattern) -> list[Path]:
    """A file, a run folder (its checkpoints/*.ckpt), a glob, or a list of those."""
    patterns = [pattern] if isinstance(pattern, str) else list(pattern or [])
    found: list[Path] = []
    for p in patterns:
        path = Path(str(p)).expanduser()
        if path.is_dir():
            inside = sorted(path.glob("checkpoints/*.ckpt")) or sorted(path.glob("*.ckpt"))
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


def load_generator(path: Path, device="cpu"):
    """(generator, discriminator, lab_config, info) rebuilt from a GANModule checkpoint."""
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
    return generator.to(device), discriminator.to(device), config, info


def _device(name: str) -> torch.device:
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


def _label(path: Path) -> str:
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return f"{run.name}/{path.stem}"


def evaluate(cfg: DictConfig) -> dict[str, dict]:
    """Metrics for every checkpoint matched by cfg.ckpt; prints a table, writes metrics.json beside each."""
    settings = OmegaConf.to_container(cfg.metrics, resolve=True)
    device = _device(cfg.device)
    suites: dict[str, MetricSuite] = {}
    results: dict[str, dict] = {}
    for path in find_checkpoints(cfg.ckpt):
        generator, discriminator, config, info = load_generator(path, device)
        dataset_key = json.dumps(config["dataset"], sort_keys=True)
        if dataset_key not in suites:  # one suite per dataset: classifier and reference statistics load once
            suites[dataset_key] = MetricSuite(settings, instantiate(config["dataset"]), cfg.paths.cache_dir, device=device)
        log.info("evaluating %s (%s, epoch %s, %s G steps)", path, info["generator"], info["epoch"], info["g_step"])
        figures = path.parent / f"{path.stem}_metrics" if cfg.figures else None
        report = suites[dataset_key].evaluate(generator, discriminator, inception=True, figures_dir=figures)
        entry = {**info, **report.scalars, **report.extras}
        _write_json(path, entry)
        results[_label(path)] = entry
    print(_table({label: {k: v for k, v in entry.items() if isinstance(v, float) and k != "metrics/eval_time_s"}
                  for label, entry in results.items()}))
    return results


def _write_json(path: Path, entry: dict) -> None:
    """metrics.json in the checkpoint's folder: {checkpoint file name: its metrics}, merged, written atomically."""
    target = path.parent / "metrics.json"
    existing = {}
    if target.exists():
        try:
            existing = json.loads(target.read_text())
        except json.JSONDecodeError:
            log.warning("%s was not valid JSON; rewriting it", target)
    existing[path.name] = entry
    write_text_atomically(json.dumps(existing, indent=2, sort_keys=True), target)
    log.info("wrote %s", target)


def main(cfg: DictConfig):
    """CLI entry: a LabError becomes one line on stderr and exit status 2."""
    try:
        return evaluate(cfg)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
