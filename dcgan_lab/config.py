"""Checks on the composed config before anything runs: every value against its domain (dcgan_lab/schema.py),
then what relates several groups. Each failure is one line naming the key, the bad value and what to use; an override
that changes nothing in its run (a key whose switch is off) is one warning line.
"""
from __future__ import annotations

import inspect
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable

from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from dcgan_lab import CONF_DIR
from dcgan_lab.errors import ConfigError, not_a_folder
from dcgan_lab.schema import problems

def _missing_keys(node, prefix: str = "") -> list[str]:
    # Like OmegaConf.missing_keys, without resolving interpolations (which would fail on the missing value).
    found = []
    if not isinstance(node, DictConfig):
        return found
    for key in node.keys():
        if OmegaConf.is_missing(node, key):
            found.append(f"{prefix}{key}")
        elif not OmegaConf.is_interpolation(node, key) and isinstance(node[key], DictConfig):
            found += _missing_keys(node[key], f"{prefix}{key}.")
    return found


def settled(cfg: DictConfig) -> DictConfig:
    """The run's config with each interpolation replaced by its value, read once; Hydra's own section is left out
    (HydraConfig holds it). OmegaConf parses an interpolation anew at every read, and a short run read the
    config's hundred-odd interpolations several times over: half a second, a sixth of a 4-batch run. A value left
    missing (`???`) that another interpolates cannot be settled: validate says so first."""
    values = {}
    for key in cfg:
        if key != "hydra":
            value = cfg[key]  # read once: a top-level interpolation is resolved here
            values[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    out = OmegaConf.create(values)
    OmegaConf.set_struct(out, OmegaConf.is_struct(cfg))
    return out


def flatten(node, prefix: str = "", keep_empty: bool = False) -> dict:
    """A plain nested dict's leaves by dotted key (lists stay whole); `keep_empty` keeps an empty dict as a leaf."""
    if isinstance(node, dict) and (node or not keep_empty):
        flat = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}.", keep_empty))
        return flat
    return {prefix[:-1]: node}


def flat_values(cfg: DictConfig) -> dict:
    """The resolved config's leaves by dotted key (lists stay whole), without Hydra's section and the module wiring."""
    container = OmegaConf.to_container(cfg, resolve=True)
    return flatten({key: value for key, value in container.items() if key not in ("hydra", "module")})


def labelled_datasets() -> list[str]:
    """The dataset options whose YAML gives classes (num_classes > 0): conf/dataset/ is the registry, so a new
    labelled dataset is named here without a second list to keep up to date."""
    options = []
    for path in sorted((CONF_DIR / "dataset").glob("*.yaml")):
        classes = OmegaConf.to_container(OmegaConf.load(path)).get("num_classes")
        if isinstance(classes, int) and classes > 0:
            options.append(f"dataset={path.stem}")
    return options


def losses_with_targets() -> list[str]:
    """The loss options whose D loss takes label targets (`real_target`: smoothing and flipping): read from
    conf/loss/, as labelled_datasets reads conf/dataset/, so a new such loss is named where label tricks are refused."""
    options = []
    for path in sorted((CONF_DIR / "loss").glob("*.yaml")):
        target = OmegaConf.to_container(OmegaConf.load(path)).get("d", {}).get("_target_")
        if target and "real_target" in inspect.signature(get_method(target)).parameters:
            options.append(f"loss={path.stem}")
    return options


def _no_classes(dataset: DictConfig) -> str:
    """What model.conditional=true on a dataset without classes says: which labelled datasets there are, or, for a
    dataset labelled by its folders (a `labels` key: conf/dataset/image_folder.yaml), how to give it classes."""
    head = (f"model.conditional=true needs a labelled dataset, but dataset {dataset.name} has no classes "
            f"(dataset.num_classes=0): ")
    if "labels" not in dataset:
        return head + f"use {' or '.join(labelled_datasets())}, or model.conditional=false."
    if dataset.labels == "subfolders":  # the folder is missing or has no subfolders: class_names is empty
        if not Path(dataset.path).expanduser().is_dir():
            return not_a_folder(dataset.path)
        return head + (f"dataset.labels=subfolders found no class subfolders in dataset.path={dataset.path}; "
                       "put each class's images in a subfolder of its own, or set model.conditional=false.")
    return head + ("set dataset.labels=subfolders (each first-level subfolder of dataset.path is a class), "
                   "or model.conditional=false.")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: DictConfig) -> DictConfig:
    """One ConfigError for the first value the run cannot take; else the config settled (values, no interpolations)."""
    missing = [k for k in _missing_keys(cfg) if not k.startswith("hydra")]
    if missing:
        raise ConfigError(f"{', '.join(sorted(missing))} must be set: add `{sorted(missing)[0]}=...` to the command line.")
    cfg = settled(cfg)
    found = problems(flat_values(cfg))
    if found:
        raise ConfigError(found[0])
    _validate_across_groups(cfg)
    return cfg


def _validate_across_groups(cfg: DictConfig) -> None:
    """What one value cannot say alone: sizes inside the network, labels for conditioning, files on disk."""
    size, m = cfg.dataset.image_size, cfg.model
    if m.get("attention"):
        allowed = [2**k for k in range(2, size.bit_length() - 1)]  # 4 .. image_size/2
        _check(
            m.attention_res in allowed,
            f"model.attention_res={m.attention_res} is not a resolution inside the network for image_size={size}: use one of {allowed}.",
        )
    if m.conditional:
        _check(cfg.dataset.num_classes > 0, _no_classes(cfg.dataset))
    growth = m.get("growth")
    if growth is not None:
        # Growth past the data's size crashed mid-run (G has no such layers); short of it, G never reached the data's size.
        _check(
            growth.final_resolution == size,
            f"model.growth.final_resolution={growth.final_resolution} must be dataset.image_size={size}: progressive "
            "growing ends at the data's size; set dataset.image_size and leave model.growth.final_resolution to follow it.",
        )
        _check(
            growth.start_resolution in [2**k for k in range(2, size.bit_length())],
            f"model.growth.start_resolution={growth.start_resolution} must be a power of two from 4 to dataset.image_size={size}.",
        )
    if cfg.loss.perceptual_weight:
        p = cfg.loss.perceptual
        _check(
            Path(p.weights_path).is_file(),
            f"loss.perceptual.weights_path={p.weights_path} does not exist: the perceptual loss needs {p.network} weights "
            "on disk (nothing is downloaded); put the file there or set loss.perceptual_weight=0.",
        )
    if cfg.get("metrics"):
        from dcgan_lab.metrics.suite import settings_from  # the metrics options' own checks (evaluate.py runs them too)

        settings_from(OmegaConf.to_container(cfg.metrics, resolve=True))


# Keys that act only when another setting turns them on. Given on the command line without it they change nothing,
# and a sweep over one trains the same run again and again: a warning, not an error (a sweep may cross the switch).
ACTS_ONLY_WITH: dict[str, tuple[Callable[[DictConfig], bool], str]] = {
    "model.attention_res": (lambda cfg: cfg.model.get("attention", False), "model.attention=true"),
    "model.attention_d": (lambda cfg: cfg.model.get("attention", False), "model.attention=true"),
    "model.g_conditioning": (lambda cfg: cfg.model.conditional, "model.conditional=true"),
    "model.d_conditioning": (lambda cfg: cfg.model.conditional, "model.conditional=true"),
    "model.embed_dim": (lambda cfg: cfg.model.conditional and cfg.model.g_conditioning == "concat",
                        "model.conditional=true and model.g_conditioning=concat"),
    "model.ema_warmup_steps": (lambda cfg: cfg.model.ema_decay > 0, "model.ema_decay above 0 (e.g. 0.999)"),
    "training.instance_noise_anneal_steps": (lambda cfg: cfg.training.instance_noise > 0,
                                             "training.instance_noise above 0 (e.g. 0.1)"),
    "loss.perceptual.*": (lambda cfg: cfg.loss.perceptual_weight > 0, "loss.perceptual_weight above 0"),
}


def override_key(override: str) -> str:
    """The config key an override sets: `model.attention` for `model.attention=true`, `+loss.x=1` or `~loss.x`."""
    return override.split("=", 1)[0].lstrip("+~")


def inert_overrides(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """One line for each command-line override (`key=value`) that changes nothing in this run (ACTS_ONLY_WITH)."""
    lines = []
    for override in overrides:
        key = override_key(override)
        for pattern, (acts, switch) in ACTS_ONLY_WITH.items():
            if fnmatch(key, pattern) and not acts(cfg):
                lines.append(f"{override} changes nothing in this run: it acts only with {switch}.")
    return lines


def compose_run_config(run_dir: str | Path, overrides: list[str] = (), root_dir: str | Path | None = None,
                       config_name: str = "config") -> DictConfig:
    """The config `python train.py <overrides>` (config_name="evaluate": evaluate.py) would get, composed
    in-process for a run in `run_dir`.

    Hydra's runtime section is filled in as @hydra.main would, so `${hydra:...}` interpolations resolve;
    tests and the benchmark call `train(cfg)` with it.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    root_dir = str(root_dir or CONF_DIR.parent)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = cfg.hydra.run.dir = str(run_dir)
        cfg.hydra.runtime.cwd = root_dir
        cfg.hydra.overrides.hydra.append(f"hydra.run.dir={run_dir}")  # the caller chose the folder (sweep.folder_not_given)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.root_dir = root_dir
    return cfg
