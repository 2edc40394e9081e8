"""Shared fixtures: compose the real Hydra config (as `python train.py` would) into a temp run folder."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from omegaconf import open_dict

import dcgan_lab  # registers the config resolvers
from dcgan_lab.config import compose_run_config

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(dcgan_lab.CONF_DIR)
PYTHON = sys.executable

# Small and quick: a tiny DCGAN on a few batches of the embedded digits, CSV logging only.
FAST = [
    "logger=csv",
    "model.ngf=8",
    "model.ndf=8",
    "dataset.batch_size=16",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "metrics=none",  # metric tests turn them on (metrics=default): seconds per run otherwise
]


def pytest_configure(config):
    """Under pytest-xdist (`make test`), each worker takes its share of the cores for torch, and the runs it starts
    in subprocesses inherit it: workers with torch's default of every core would oversubscribe them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch
        from threadpoolctl import threadpool_limits

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // workers)
        torch.set_num_threads(threads)
        threadpool_limits(threads)  # numpy's BLAS and scikit-learn's OpenMP (KMeans), loaded already
        os.environ["OMP_NUM_THREADS"] = str(threads)


def progress_bar(refresh_rate: int) -> list[str]:
    """The overrides that put the lab's progress bar back (FAST turns it off), redrawn every `refresh_rate` batches,
    and keep it where the console is not a terminal (pytest's capture), which would get log lines instead."""
    return [f"+callbacks.progress_bar={{_target_:dcgan_lab.callbacks.progress.LabProgressBar,refresh_rate:{refresh_rate}}}",
            "console=bar"]


def compose_config(run_dir: Path, overrides: list[str] = (), cache_dir: Path | None = None):
    """The composed config with Hydra's runtime set, so ${hydra:...} interpolations resolve."""
    cfg = compose_run_config(run_dir, overrides, root_dir=ROOT)
    if cache_dir is not None:
        with open_dict(cfg):
            cfg.paths.cache_dir = str(cache_dir)
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    """make_cfg(*overrides, fast=True) -> composed config writing into tmp_path/run."""

    def make(*overrides: str, fast: bool = True, run_dir: Path | None = None):
        return compose_config(run_dir or tmp_path / "run", (FAST if fast else []) + list(overrides))

    return make


@pytest.fixture(autouse=True)
def _offline_wandb(monkeypatch, tmp_path):
    # No credentials and no network in tests: W&B must go offline and never prompt.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".wandb_config"))


def run_cli(args: list[str], cwd: Path, timeout: int = 300, env: dict | None = None):
    """`python train.py ...` in a subprocess, as a user would type it."""
    import subprocess

    full_env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run(
        [PYTHON, str(ROOT / "train.py"), *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def drawn(monkeypatch) -> dict:
    """The matplotlib figures the report saves, by file name, kept open for their numbers and layout."""
    import matplotlib.figure

    figures, save = {}, matplotlib.figure.Figure.savefig

    def keep(fig, path, *args, **kwargs):
        save(fig, path, *args, **kwargs)
        figures[Path(path).name] = (fig, kwargs.get("dpi", fig.dpi))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return figures
