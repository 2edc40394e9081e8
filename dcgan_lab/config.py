"""Checks on the composed config that Hydra's struct mode cannot make: types, ranges, consistency.

Each failure is one line naming the key, the bad value and what to use instead.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from dcgan_lab.errors import ConfigError
from dcgan_lab.nets.blocks import is_power_of_two


def _number(cfg: DictConfig, key: str) -> float:
    value = cfg
    for part in key.split("."):
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}={value!r} must be a number.")
    return value


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _missing_keys(node, prefix: str = "") -> list[str]:
    # Like OmegaConf.missing_keys, without resolving interpolations (which would fail on the missing value).
    from omegaconf import OmegaConf

    found = []
    if not isinstance(node, DictConfig):
        return found
    for key in node.keys():
        if OmegaConf.is_missing(node, key):
            found.append(f"{prefix}{key}")
        elif not OmegaConf.is_interpolation(node, key) and isinstance(node[key], DictConfig):
            found += _missing_keys(node[key], f"{prefix}{key}.")
    return found


def _validate_run_and_reliability(cfg: DictConfig) -> None:
    """Required values, training length, resuming and the divergence guard."""
    missing = [k for k in _missing_keys(cfg) if not k.startswith("hydra")]
    if missing:
        raise ConfigError(f"{', '.join(sorted(missing))} must be set: add `{sorted(missing)[0]}=...` to the command line.")
    for key in ("trainer.max_epochs", "trainer.max_steps"):
        value = _number(cfg, key)
        _check(isinstance(value, int) and (value >= 1 or value == -1), f"{key}={value} must be an integer >= 1, or -1 for no limit.")
    _check(isinstance(cfg.get("resume", False), bool), f"resume={cfg.get('resume')!r} must be true or false.")
    guard = (cfg.get("callbacks") or {}).get("divergence_guard")
    if guard is not None:
        _check(guard.action in ("stop", "rollback"), f"callbacks.divergence_guard.action={guard.action!r} must be 'stop' or 'rollback'.")
        _check(0 < _number(guard, "lr_factor") < 1, f"callbacks.divergence_guard.lr_factor={guard.lr_factor} must be in (0, 1), e.g. 0.5.")
        _check(isinstance(guard.max_rollbacks, int) and guard.max_rollbacks >= 0, f"callbacks.divergence_guard.max_rollbacks={guard.max_rollbacks} must be an integer >= 0.")


def validate(cfg: DictConfig) -> None:
    _validate_run_and_reliability(cfg)
    size = cfg.dataset.image_size
    _check(
        isinstance(size, int) and is_power_of_two(size) and 16 <= size <= 256,
        f"dataset.image_size={size} is not supported: use a power of two from 16 to 256 (e.g. 32 or 64).",
    )
    _check(isinstance(cfg.dataset.batch_size, int) and cfg.dataset.batch_size >= 1, f"dataset.batch_size={cfg.dataset.batch_size} must be an integer >= 1.")
    _check(cfg.dataset.channels in (1, 3), f"dataset.channels={cfg.dataset.channels} must be 1 (grayscale) or 3 (RGB).")

    for key in ("optimizer.lr_g", "optimizer.lr_d"):
        _check(_number(cfg, key) > 0, f"{key}={_number(cfg, key)} must be > 0 (DCGAN uses 2e-4).")
    if "betas" in cfg.optimizer:
        betas = list(cfg.optimizer.betas)
        _check(
            len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas),
            f"optimizer.betas={betas} must be two numbers in [0, 1), e.g. [0.5,0.999].",
        )
    for key in ("optimizer.weight_decay_g", "optimizer.weight_decay_d"):
        _check(_number(cfg, key) >= 0, f"{key}={_number(cfg, key)} must be >= 0.")

    t = cfg.training
    _check(isinstance(t.n_critic, int) and t.n_critic >= 1, f"training.n_critic={t.n_critic} must be an integer >= 1.")
    _check(isinstance(t.accumulate, int) and t.accumulate >= 1, f"training.accumulate={t.accumulate} must be an integer >= 1.")
    _check(0 < _number(cfg, "training.real_label") <= 1, f"training.real_label={t.real_label} must be in (0, 1]; 0.9 is one-sided smoothing.")
    _check(0 <= _number(cfg, "training.fake_label") < 1, f"training.fake_label={t.fake_label} must be in [0, 1).")
    _check(0 <= _number(cfg, "training.flip_prob") < 0.5, f"training.flip_prob={t.flip_prob} must be in [0, 0.5).")
    _check(_number(cfg, "training.instance_noise") >= 0, f"training.instance_noise={t.instance_noise} must be >= 0.")
    _check(_number(cfg, "training.grad_clip") >= 0, f"training.grad_clip={t.grad_clip} must be >= 0 (0 = off).")
    _check(_number(cfg, "loss.gp_weight") >= 0 and _number(cfg, "loss.r1_weight") >= 0, "loss.gp_weight and loss.r1_weight must be >= 0.")

    m = cfg.model
    if m.get("attention"):
        allowed = [2**k for k in range(2, size.bit_length() - 1)]  # 4 .. image_size/2
        _check(
            m.attention_res in allowed,
            f"model.attention_res={m.attention_res} is not a resolution inside the network for image_size={size}: use one of {allowed}.",
        )
    _check(0 <= _number(cfg, "model.d_dropout") < 1, f"model.d_dropout={m.d_dropout} must be in [0, 1).")
    _check(m.get("g_stem", "convtranspose") in ("convtranspose", "linear"), f"model.g_stem={m.get('g_stem')!r} must be 'convtranspose' or 'linear'.")
    _validate_techniques(cfg)


def _validate_techniques(cfg: DictConfig) -> None:
    """Conditioning, EMA, progressive growing, extra G objectives."""
    m = cfg.model
    if m.conditional:
        _check(
            cfg.dataset.num_classes > 0,
            f"model.conditional=true needs a labelled dataset, but dataset {cfg.dataset.name} has no classes "
            "(dataset.num_classes=0): use mnist_mini, mnist, fashion_mnist or cifar10, or model.conditional=false.",
        )
        _check(m.g_conditioning in ("concat", "cbn"), f"model.g_conditioning={m.g_conditioning!r} must be 'concat' or 'cbn'.")
        _check(m.d_conditioning in ("concat", "projection"), f"model.d_conditioning={m.d_conditioning!r} must be 'concat' or 'projection'.")
        _check(isinstance(m.embed_dim, int) and m.embed_dim >= 1, f"model.embed_dim={m.embed_dim} must be an integer >= 1.")
    _check(0 <= _number(cfg, "model.ema_decay") < 1, f"model.ema_decay={m.ema_decay} must be in [0, 1) (0 = off; 0.999 is typical).")
    _check(isinstance(m.ema_warmup_steps, int) and m.ema_warmup_steps >= 0, f"model.ema_warmup_steps={m.ema_warmup_steps} must be an integer >= 0.")
    growth = m.get("growth")
    if growth is not None:
        _check(isinstance(growth.fade_images, int) and growth.fade_images >= 1, f"model.growth.fade_images={growth.fade_images} must be an integer >= 1.")
        _check(isinstance(growth.stable_images, int) and growth.stable_images >= 0, f"model.growth.stable_images={growth.stable_images} must be an integer >= 0.")
        _check(
            growth.start_resolution in [2**k for k in range(2, cfg.dataset.image_size.bit_length())],
            f"model.growth.start_resolution={growth.start_resolution} must be a power of two from 4 to dataset.image_size={cfg.dataset.image_size}.",
        )
    for key in ("loss.feature_matching_weight", "loss.perceptual_weight"):
        _check(_number(cfg, key) >= 0, f"{key}={_number(cfg, key)} must be >= 0 (0 = off).")
    if cfg.loss.perceptual_weight:
        p = cfg.loss.perceptual
        _check(
            Path(p.weights_path).is_file(),
            f"loss.perceptual.weights_path={p.weights_path} does not exist: the perceptual loss needs {p.network} weights "
            "on disk (nothing is downloaded); put the file there or set loss.perceptual_weight=0.",
        )


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_run_config(run_dir: str | Path, overrides: list[str] = (), root_dir: str | Path | None = None) -> DictConfig:
    """The config `python train.py <overrides>` would get, composed in-process for a run in `run_dir`.

    Hydra's runtime section is filled in as @hydra.main would, so `${hydra:...}` interpolations resolve;
    tests and the benchmark call `train(cfg)` with it.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    root_dir = str(root_dir or CONF_DIR.parent)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.runtime.cwd = root_dir
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.root_dir = root_dir
    return cfg
