"""The domain of every numeric and yes/no config value, in one table that `config.validate` walks before anything runs.

A key holding `*` covers every key it matches (`loss.*_weight`: a new regulariser's weight needs no entry). A key absent from the composed config (e.g. `optimizer.momentum` with optimizer=adam) is skipped. Checks that
relate several groups (an attention resolution inside the network, a conditional model on a labelled dataset)
stay in config.py. Each failure is one line: `<key>=<value> must be <domain><hint>.`
"""
from __future__ import annotations

import math
from fnmatch import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

from dcgan_lab.augment import policy_problem
from dcgan_lab.metrics.registry import enabled_problem


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Range:
    """A number in an interval, optionally an integer, optionally with extra allowed values (e.g. -1 = no limit)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    also: tuple = ()
    hint: str = ""
    needs: tuple[str, ...] = ()  # overrides under which the key exists (for the generated bad-value test)

    def describe(self) -> str:
        kind = "an integer " if self.integer else ""
        if self.low is not None and self.high is not None:
            text = f"{kind}in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{kind}{'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            text = f"{kind}{'<' if self.high_open else '<='} {self.high:g}"
        else:
            text = "an integer" if self.integer else "a number"
        if self.also == (-1,):
            text += ", or -1 for no limit"
        elif self.also == (None,):
            text += ", or null"
        return text

    def problem(self, value) -> str | None:
        if value in self.also and not isinstance(value, bool):
            return None
        if not _number(value) or (isinstance(value, float) and not math.isfinite(value)):
            return f"must be {self.describe()}" if self.integer else "must be a number"
        inside = (
            (not self.integer or float(value).is_integer() and isinstance(value, int))
            and (self.low is None or (value > self.low if self.low_open else value >= self.low))
            and (self.high is None or (value < self.high if self.high_open else value <= self.high))
        )
        return None if inside else f"must be {self.describe()}"

    def bad_values(self) -> list:
        """Values just outside the domain (the generated test tries each)."""
        values = []
        if self.low is not None:
            values.append(self.low if self.low_open else (self.low - 1 if self.integer else self.low - 0.5))
        if self.high is not None:
            values.append(self.high if self.high_open else (self.high + 1 if self.integer else self.high + 0.5))
        if self.integer:
            values.append(1.5)
        return [v for v in values if v not in self.also] or ["not-a-number"]


@dataclass(frozen=True)
class PowerOfTwo:
    low: int
    high: int
    hint: str = ""
    needs: tuple[str, ...] = ()

    def problem(self, value) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1 and value & (value - 1) == 0
        return None if ok and self.low <= value <= self.high else (
            f"is not supported: use a power of two from {self.low} to {self.high}")

    def bad_values(self) -> list:
        return [48, self.low // 2, self.high * 2]


@dataclass(frozen=True)
class OneOf:
    choices: tuple
    hint: str = ""
    needs: tuple[str, ...] = ()

    def problem(self, value) -> str | None:
        return None if value in self.choices and not isinstance(value, bool) else (
            "must be " + " or ".join(repr(c) if isinstance(c, str) else str(c) for c in self.choices))

    def bad_values(self) -> list:
        return [2] if all(isinstance(c, int) for c in self.choices) else ["nonsense"]


@dataclass(frozen=True)
class Flag:
    """A yes/no value: true or false (`also`: a few other values the consumer takes, e.g. Lightning's 'warn';
    `or_count`: or a number of batches, as trainer.fast_dev_run). A string like 'maybe' is not read as a yes."""

    also: tuple = ()
    or_count: bool = False
    hint: str = ""
    needs: tuple[str, ...] = ()

    def problem(self, value) -> str | None:
        if isinstance(value, bool) or value in self.also and not _number(value):
            return None
        if self.or_count and _number(value) and isinstance(value, int) and value >= 0:
            return None
        text = "true or false" + "".join(f", or {v!r}" for v in self.also)
        return f"must be {text}" + (", or a number of batches (an integer >= 0; 0 = off)" if self.or_count else "")

    def bad_values(self) -> list:
        return ["maybe"]


@dataclass(frozen=True)
class Pair:
    """Two numbers, each in `each` (Adam's betas)."""

    each: Range = field(default_factory=Range)
    hint: str = ""
    needs: tuple[str, ...] = ()

    def problem(self, value) -> str | None:
        ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(self.each.problem(v) is None for v in value)
        return None if ok else f"must be two numbers {self.each.describe()}"

    def bad_values(self) -> list:
        return [[0.5, 1.0], [0.5]]


@dataclass(frozen=True)
class Names:
    """A list of names that some registry owns; `check(value)` is that registry's own check (None = fine)."""

    check: Callable[[Any], str | None]
    hint: str = ""
    needs: tuple[str, ...] = ()

    def problem(self, value) -> str | None:
        return self.check(value)

    def bad_values(self) -> list:
        return [["nonsense"]]


PROBABILITY = dict(low=0, high=1, high_open=True)
COUNT = dict(low=1, integer=True)
DDP = ("trainer=ddp_cpu",)

SCHEMA: dict[str, Range | PowerOfTwo | OneOf | Flag | Pair | Names] = {
    "seed": Range(integer=True, low=0),
    "console": OneOf(("auto", "bar", "lines")),
    "resume": Flag(),
    # dataset
    "dataset.image_size": PowerOfTwo(16, 256, hint=" (e.g. 32 or 64)"),
    "dataset.batch_size": Range(**COUNT),
    "dataset.channels": OneOf((1, 3), hint=" (grayscale or RGB)"),
    "dataset.num_workers": Range(low=0, integer=True),
    "dataset.distinct_images": Flag(hint=" (false: the images are near-copies of one another)",
                                    needs=("dataset=photo_patches",)),
    "dataset.source.download": Flag(needs=("dataset=cifar10",)),
    # model
    "model.latent_dim": Range(**COUNT),
    "model.ngf": Range(**COUNT),
    "model.ndf": Range(**COUNT),
    "model.embed_dim": Range(**COUNT),
    "model.d_dropout": Range(**PROBABILITY),
    "model.ema_decay": Range(**PROBABILITY, hint=" (0 = off; 0.999 is typical)"),
    "model.ema_warmup_steps": Range(low=0, integer=True),
    "model.conditional": Flag(),
    "model.attention": Flag(),
    "model.attention_d": Flag(),
    "model.minibatch_std": Flag(),
    "model.spectral_norm_g": Flag(),
    "model.spectral_norm_d": Flag(),
    "model.growth.fade_images": Range(**COUNT, needs=("model=progressive",)),
    "model.growth.stable_images": Range(low=0, integer=True, needs=("model=progressive",)),
    "activation.slope": Range(low=0, high=1, high_open=True, hint=" (LeakyReLU's negative slope; DCGAN uses 0.2)",
                              needs=("activation=leaky_relu",)),
    # optimizer
    "optimizer.lr_g": Range(low=0, low_open=True, hint=" (DCGAN uses 2e-4)"),
    "optimizer.lr_d": Range(low=0, low_open=True, hint=" (DCGAN uses 2e-4)"),
    "optimizer.betas": Pair(Range(**PROBABILITY), hint=", e.g. [0.5,0.999]"),
    "optimizer.weight_decay": Range(low=0),
    "optimizer.weight_decay_g": Range(low=0),
    "optimizer.weight_decay_d": Range(low=0),
    "optimizer.momentum": Range(**PROBABILITY, needs=("optimizer=sgd",)),
    "optimizer.alpha": Range(low=0, high=1, low_open=True, high_open=True, needs=("optimizer=rmsprop",)),
    # schedule
    "schedule.start_fraction": Range(low=0, high=1, needs=("schedule=linear",)),
    "schedule.min_factor": Range(low=0, high=1, needs=("schedule=cosine",)),
    "schedule.period": Range(**COUNT, needs=("schedule=cyclic",)),
    # loss
    "loss.*_weight": Range(low=0, hint=" (0 = off)"),  # every regulariser's weight, a new one included
    "loss.consistency_augment.crop_padding": Range(low=0, integer=True, hint=" (pixels of shift)"),
    "loss.consistency_augment.flip": Flag(),
    "loss.consistency_augment.clamp": Flag(),
    # augment
    "augment.real.crop_padding": Range(low=0, integer=True, needs=("augment=real",)),
    "augment.real.flip": Flag(needs=("augment=real",)),
    "augment.real.brightness": Range(low=0, high=1, needs=("augment=real",)),
    "augment.real.contrast": Range(low=0, high=1, high_open=True, needs=("augment=real",)),
    "augment.diff.translation_ratio": Range(low=0, high=0.5, needs=("augment=diffaugment",)),
    "augment.diff.cutout_ratio": Range(low=0, high=1, needs=("augment=diffaugment",)),
    "augment.diff.policy": Names(policy_problem, hint=", e.g. 'augment.diff.policy=[color,translation]'",
                                 needs=("augment=diffaugment",)),
    # training
    "training.n_critic": Range(**COUNT),
    "training.accumulate": Range(**COUNT),
    "training.real_label": Range(low=0, high=1, low_open=True, hint="; 0.9 is one-sided smoothing"),
    "training.fake_label": Range(**PROBABILITY),
    "training.flip_prob": Range(low=0, high=0.5, high_open=True),
    "training.instance_noise": Range(low=0),
    "training.instance_noise_anneal_steps": Range(low=0, integer=True, hint=" (0 = constant)"),
    "training.grad_clip": Range(low=0, hint=" (0 = off)"),
    "training.num_samples": Range(**COUNT),
    "training.cuda_graph": Flag(),
    # trainer
    "trainer.max_epochs": Range(**COUNT, also=(-1,)),
    "trainer.max_steps": Range(**COUNT, also=(-1,)),
    "trainer.log_every_n_steps": Range(**COUNT),
    "trainer.fast_dev_run": Flag(or_count=True),
    "trainer.deterministic": Flag(also=("warn",)),
    "trainer.enable_progress_bar": Flag(),
    "trainer.enable_model_summary": Flag(),
    "trainer.sync_batchnorm": Flag(needs=DDP),
    "trainer.use_distributed_sampler": Flag(needs=DDP),
    "trainer.strategy.find_unused_parameters": Flag(needs=DDP),
    # logger
    "logger.tensorboard.default_hp_metric": Flag(needs=("logger=tensorboard",)),
    # callbacks
    "callbacks.divergence_guard.lr_factor": Range(low=0, high=1, low_open=True, high_open=True, hint=", e.g. 0.5"),
    "callbacks.divergence_guard.max_rollbacks": Range(low=0, integer=True),
    "callbacks.divergence_guard.every_n_batches": Range(**COUNT),
    "callbacks.divergence_guard.action": OneOf(("stop", "rollback")),
    "callbacks.model_checkpoint.every_n_epochs": Range(**COUNT),
    "callbacks.best_checkpoint.mode": OneOf(("min", "max")),
    "callbacks.sample_grid.every_n_epochs": Range(**COUNT),
    "callbacks.sample_grid.walk_rows": Range(low=0, integer=True, hint=" (0 = no interpolation.png)"),
    "callbacks.sample_grid.walk_steps": Range(low=2, integer=True),
    "callbacks.progress_bar.refresh_rate": Range(**COUNT),
    "callbacks.progress_bar.leave": Flag(),
    "callbacks.sample_grid.spherical": Flag(),
    "callbacks.sample_grid.animation": Flag(),
    "callbacks.channels_last.enabled": Flag(),
    "callbacks.compile.enabled": Flag(),
    "callbacks.throughput.warmup": Range(low=0, integer=True),
    # choices that are not group options
    "model.g_stem": OneOf(("convtranspose", "linear")),
    "model.g_conditioning": OneOf(("concat", "cbn")),
    "model.d_conditioning": OneOf(("projection", "concat")),
    "dataset.crop": Range(**COUNT, also=(None,), hint=" (the centred square's side in source pixels; CelebA: 178)",
                          needs=("dataset=celeba",)),
    "dataset.on_corrupt": OneOf(("skip", "error"), needs=("dataset=image_folder", "dataset.path=/tmp")),
    "dataset.labels": OneOf(("none", "subfolders"), hint=" (classes from the folder's first-level subfolders)",
                            needs=("dataset=image_folder", "dataset.path=/tmp")),
    # metrics (conf/metrics)
    "metrics.enabled": Names(enabled_problem),  # read when checked: a metric registered later (a test's) counts
    "metrics.n_samples": Range(**COUNT),
    "metrics.every_n_epochs": Range(low=0, integer=True, hint=" (0 = only at the end)"),
    "metrics.batch_size": Range(**COUNT),
    "metrics.seed": Range(low=0, integer=True),
    "metrics.at_end": Flag(),
    "metrics.figures": Flag(),
    "metrics.classifier_epochs": Range(**COUNT),
    "metrics.coverage_threshold": Range(low=0, high=1, low_open=True),
    "metrics.kmeans_k": Range(low=2, integer=True),
    "metrics.pca_components": Range(low=0, integer=True, also=(None,), hint=" (0 or null = no PCA)"),
    "metrics.pr_k": Range(**COUNT),
    "metrics.dc_k": Range(**COUNT),
    "metrics.n_reference": Range(**COUNT),
    "metrics.copy_quantile": Range(low=0, high=1, low_open=True, high_open=True, hint=", e.g. 0.01"),
    "metrics.copy_cells": Range(**COUNT),
    "metrics.inception_during_training": OneOf(("auto", "every", "end", "never")),
    "metrics.inception_n_samples": Range(low=2, integer=True, also=(None,), hint=" (null = n_samples)"),
    "metrics.inception_n_reference": Range(low=2, integer=True, also=(None,), hint=" (null = as many as generated)"),
}


def domain_of(key: str):
    """The key's domain: its own entry, else the first pattern entry (`loss.*_weight`) it matches, else None."""
    if key in SCHEMA:
        return SCHEMA[key]
    return next((d for pattern, d in SCHEMA.items() if "*" in pattern and fnmatch(key, pattern)), None)


def problems(values: dict) -> list[str]:
    """One line per value outside its domain; `values` maps dotted keys to the resolved config's leaves."""
    found = []
    exact = [k for k in SCHEMA if k in values]
    patterned = [k for k in values if k not in SCHEMA and domain_of(k) is not None]
    for key in exact + patterned:
        domain, value = domain_of(key), values[key]
        value = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig" else value
        problem = domain.problem(value)
        if problem is not None:
            shown = repr(value) if isinstance(value, str) else value
            hint = domain.hint if problem != "must be a number" else ""
            found.append(f"{key}={shown} {problem}{hint}.")
    return found
