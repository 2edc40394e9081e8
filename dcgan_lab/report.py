"""A sweep's report (a Hydra multirun folder, or any folder of runs) -> report.md, report.csv, curves.png, effects.png,
samples.png.

Written into that folder: `multirun/<date>/<time>`, or e.g. `outputs/<date>` to compare separate runs. Further
folders add their jobs to the first one's report (a baseline run earlier, another study's variants), read where they
are: nothing is copied or written there. The first may then be a new, empty folder for the comparison.

    python -m dcgan_lab.report multirun/<date>/<time> [more folders] [--wandb auto|online|offline|off] [--baseline loss=bce]

A variant is a job's overrides minus its seed; seeds are aggregated as mean ± std (n). When the sweep has a
baseline variant (`ablation=baseline`, or the one `--baseline` names, else the jobs that ran only the overrides every
job shares), every other variant is compared with it per metric by Welch's t-test over seeds. Variants on different
datasets form separate tables, each with its own baseline. Where a variant runs a setting of the reference study
(dcgan_lab/reference_study.py), its published number is shown beside the lab's.
Jobs that failed (status.json) are listed with their error and left out of the numbers. Where evaluate.py has
measured every finished job's last checkpoint (`python evaluate.py ckpt=<sweep folder>`), its numbers are used.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import yaml

from dcgan_lab import reference_study
from dcgan_lab.config import flatten, override_key
from dcgan_lab.errors import DataError, LabError
from dcgan_lab.metrics import registry
from dcgan_lab.report_figures import write_curves, write_effects, write_samples
from dcgan_lab.report_wandb import WANDB_CHOICES, report_to_wandb
from dcgan_lab.run_folder import read_status
from dcgan_lab.runs import (direction, epoch_end_g_steps, epoch_end_values, job_dirs, last_values, logged_epochs,
                            metric_series, read_overrides, read_rows)

log = logging.getLogger(__name__)

# Table columns: the registered metrics' report columns (dcgan_lab/metrics/registry.py), in registry order, when
# logged; report.csv adds every other metric with a direction; then these.
TRAILING_COLUMNS = ("train_time_s", "loss/d", "loss/g")
# Overrides that never define a variant: the seed is what gets aggregated, the sweep name is on every job, and
# where a job logs (logger=csv) or how its console looks change no number: seeds added later by another command
# (`hydra.sweep.dir=<sweep>/more_seeds`, reported with `<sweep>`) join their variants.
NOT_A_VARIANT = ("seed", "sweep", "logger", "console", "callbacks.progress_bar", "trainer.enable_progress_bar")
SHARED_ONLY = "(no override)"  # the variant of the jobs that ran only the overrides every job shares
# Config keys that differ per job folder or say how, not what, is trained.
NOT_A_CHANGE = ("paths", "hydra", "logger", "callbacks", "ckpt_path", "seed", "trainer")


@dataclass
class Job:
    dir: Path
    num: int
    overrides: list[str]
    status: dict | None
    final: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    variant: str = ""
    epochs: int = 0  # how many epochs its metrics.csv has rows of
    epoch_ends: dict[float, float] = field(default_factory=dict)  # {epoch index: the G step it ended at}
    epoch_times: dict[float, float] = field(default_factory=dict)  # {epoch index: its train_time_s when it ended}
    grid: str = "last.png"  # the sample grid (in samples/) of the state its values are from
    read_at_g_step: float | None = None  # the G step of that state
    shown: str = ""  # its folder as the report names it: relative to the report's folder

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def state(self) -> str:
        """ok, failed, or unfinished (no status.json yet: killed, or still running when the report is made; or
        interrupted by Ctrl-C or SIGTERM, to be continued with resume=true)."""
        if self.status is None or self.status.get("status") == "interrupted":
            return "unfinished"
        return "ok" if self.status.get("status") == "ok" else "failed"

    @property
    def error(self) -> str:
        if self.status is None:
            return "no status.json: the job was killed or is still running"
        return self.status.get("error", "")

    @property
    def rollbacks(self) -> list[dict]:
        """The divergence guard's rollbacks (status.json): each divergence's G step and the G step it went back to."""
        return (self.status or {}).get("rollbacks") or []

    @property
    def seed(self) -> str:
        return next((o.split("=", 1)[1] for o in self.overrides if override_key(o) == "seed"), "")


@dataclass
class Variant:
    label: str
    jobs: list[Job]
    changes: str = ""
    choices: dict = field(default_factory=dict)  # Hydra's group choices of its first job (dataset, ablation, ...)
    dataset: dict = field(default_factory=dict)  # its first job's dataset node (name, image_size, crop, path)
    named_baseline: bool | None = None  # report --baseline: this variant is (or is not) its table's baseline

    @property
    def is_baseline(self) -> bool:
        if self.named_baseline is not None:
            return self.named_baseline
        return self.choices.get("ablation") == "baseline" or "ablation=baseline" in self.label.split(", ")

    def values(self, metric: str) -> list[float]:
        return [job.final[metric] for job in self.ok_jobs if metric in job.final]

    @property
    def ok_jobs(self) -> list[Job]:
        return [job for job in self.jobs if job.ok]

    def stats(self, metric: str) -> tuple[float, float | None, int] | None:
        """(mean, sample std, n) over the seeds that finished; std is None for a single seed (one seed says
        nothing of the spread: a 0 would read as seeds that agree)."""
        values = self.values(metric)
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else None
        return statistics.fmean(values), std, len(values)


def find_jobs(sweep_dirs: list[Path], epochs: int | None = None, g_steps: int | None = None,
              seconds: float | None = None) -> list[Job]:
    """Every job of the sweeps (runs.job_dirs), the first one's first; with `epochs`, each job's values as they stood
    after that many epochs (its metrics.csv cut there); with `g_steps`, as they stood at the end of the epoch in
    which it took that many G steps; with `seconds`, at the end of its last epoch that ended within that many seconds
    of training (none where no epoch fits: build_report refuses those)."""
    jobs, order = [], {}  # {job folder: (the place of its folder among sweep_dirs, the sweep command it came from)}
    for index, sweep_dir in enumerate(sweep_dirs):  # the report's own folder may hold none when others are given
        for job_dir in job_dirs(sweep_dir, required=index > 0 or len(sweep_dirs) == 1):
            order[job_dir] = (index, str(sweep_of(job_dir, sweep_dir)))
    for job_dir in order:
        status = read_status(job_dir)
        metrics_csv = job_dir / "metrics.csv"
        rows = read_rows(metrics_csv) if metrics_csv.exists() else []
        ends, times = epoch_end_g_steps(rows), epoch_end_values(rows, "train_time_s")
        cut = epochs_read(ends, times, epochs, g_steps, seconds)
        curves = metric_series(rows, cut) if cut != 0 else {}
        final = {}
        if cut is None:  # status.json holds the values at the end (when logging was sparse)
            final = {k: float(v) for k, v in ((status or {}).get("final_metrics") or {}).items()}
        final.update(last_values(curves))
        if cut is None and status and status.get("train_time_s") is not None:
            final["train_time_s"] = float(status["train_time_s"])  # the whole run's, its end work included
        jobs.append(Job(job_dir, _job_num(job_dir), read_overrides(job_dir), status, final, curves,
                        epochs=logged_epochs(rows), epoch_ends=ends, epoch_times=times,
                        grid=f"epoch_{cut - 1:04d}.png" if cut else "last.png",
                        read_at_g_step=ends.get(cut - 1) if cut else max(ends.values(), default=None),
                        shown=os.path.relpath(job_dir, sweep_dirs[0])))
    # Sweep order: the folders in the order given; in each, each sweep command's jobs by their number, the sweep
    # itself before those run into it later (<sweep>/more_seeds), so variants keep the order the sweep gave them and
    # panels show its first seeds.
    jobs.sort(key=lambda job: (order[job.dir], job.num, str(job.dir)))
    return jobs


def epochs_read(ends: dict[float, float], times: dict[float, float], epochs: int | None, g_steps: int | None,
                seconds: float | None) -> int | None:
    """How many of a job's epochs are read: all (None), `epochs`, up to the one in which it took its g_steps-th G
    step (`ends`: epoch -> G step at its end), or up to its last that ended within `seconds` of training (`times`:
    epoch -> train_time_s at its end). 0 where no epoch fits: build_report refuses a finished job like that."""
    if g_steps is not None:
        return next((int(epoch) + 1 for epoch, step in ends.items() if step == g_steps), 0)
    if seconds is not None:
        return max((int(epoch) + 1 for epoch, time_s in times.items() if time_s <= seconds), default=0)
    return epochs


def sweep_of(job_dir: Path, sweep_dir: Path) -> Path:
    """The sweep command a job came from: its nearest folder with Hydra's multirun.yaml (else the folder reported)."""
    return next((folder for folder in job_dir.parents if folder.is_relative_to(sweep_dir)
                 and (folder / "multirun.yaml").is_file()), sweep_dir)


def evaluated_values(job: Job) -> dict[str, float] | None:
    """The scalars evaluate.py measured on the job's last.ckpt (checkpoints/metrics.json), when that checkpoint is
    the job's final state (the G step its status.json records), else None."""
    try:
        entry = json.loads((job.dir / "checkpoints" / "metrics.json").read_text()).get("last.ckpt")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(entry, dict) or job.status is None or entry.get("g_step") != job.status.get("g_steps"):
        return None
    return {name: value for name, value in entry.items() if isinstance(value, float) and name != "metrics/eval_time_s"}


def use_evaluations(jobs: list[Job], sweep_dirs: list[Path]) -> str | None:
    """Where evaluate.py measured every finished job's last checkpoint with one sample count (e.g. FID-10k after a
    CPU sweep), its numbers replace the logged values of the same names; a line says so. Measured for only some
    jobs, they are left out (rows measured differently would be compared), and the line says how to measure all."""
    finished = [job for job in jobs if job.ok]
    measured = {id(job): values for job in finished if (values := evaluated_values(job))}
    if not measured:
        return None
    counts = sorted({values.get("metrics/n_samples") for values in measured.values()}, key=str)
    if len(measured) < len(finished) or len(counts) > 1:
        differently = f" with different sample counts ({', '.join(f'{c:g}' for c in counts if c)})" if len(counts) > 1 else ""
        return (f"evaluate.py measured {len(measured)} of the {len(finished)} finished jobs' last checkpoints{differently}: "
                f"its numbers are left out, so that every row is measured alike ("
                f"{' and '.join(f'`python evaluate.py ckpt={folder}`' for folder in sweep_dirs)} "
                f"measure{'s' * (len(sweep_dirs) == 1)} every job's last.ckpt).")
    for job in finished:
        job.final.update(measured[id(job)])
    names = sorted({name for values in measured.values() for name in values if direction(name)})  # metrics, not counts
    return (f"Measured after training by evaluate.py ({counts[0]:g} samples per job; `metrics.json` beside each "
            f"`last.ckpt`), replacing the logged values of the same names: {', '.join(f'`{n}`' for n in names)}.")


def _job_num(job_dir: Path) -> int:
    hydra_yaml = job_dir / ".hydra" / "hydra.yaml"
    try:
        return int(yaml.safe_load(hydra_yaml.read_text())["hydra"]["job"]["num"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return sys.maxsize


def defines_variant(override: str) -> bool:
    key = override_key(override)
    return key not in NOT_A_VARIANT and key.split(".")[0] not in NOT_A_VARIANT


def group_variants(jobs: list[Job]) -> tuple[list[Variant], list[str]]:
    """Variants in sweep order, and the overrides shared by every job (the sweep's fixed settings)."""
    defining = [[o for o in job.overrides if defines_variant(o)] for job in jobs]
    common = [o for o in defining[0] if all(o in d for d in defining)] if defining else []
    variants: dict[str, Variant] = {}
    for job, overrides in zip(jobs, defining):
        job.variant = ", ".join(sorted(o for o in overrides if o not in common)) or SHARED_ONLY
        variants.setdefault(job.variant, Variant(job.variant, [])).jobs.append(job)
    result = list(variants.values())
    for variant in result:
        variant.choices, variant.dataset = _choices_and_dataset(variant.jobs[0].dir)
    return result, common


def _override_value(value: str):
    # Hydra writes a sweep's values back normalised (true -> True, 1e-4 -> 0.0001): compare what they mean.
    try:
        return float(value)
    except ValueError:
        return {"true": True, "false": False}.get(value.lower(), value.strip("'\""))


def _parsed(override: str) -> tuple[str, object]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), _override_value(value)


def name_baseline(variants: list[Variant], overrides: list[str], common: list[str]) -> None:
    """Which variant of each table the others are tested against.

    With `overrides` (report --baseline): the variant whose jobs ran every one of them, in place of
    `ablation=baseline` (a sweep such as loss=bce,hinge has none). Without: the `ablation=baseline` variant.
    Where several variants of a table qualify (a study that ran `ablation=baseline optimizer.betas=[0.0,0.9]`
    beside its baseline), the one that ran nothing else (but the overrides `common` to every job) is it: the
    others are marked not to be. One line when none, or several, remain; but where every job ran `ablation=baseline`
    it tells no variant apart, and the table has no baseline (report.md says how to name one)."""
    wanted = {_parsed(o) for o in overrides or ["ablation=baseline"]}
    shared = {_parsed(o) for o in common}
    ran = {id(v): {_parsed(o) for o in v.jobs[0].overrides if defines_variant(o)} for v in variants}
    if overrides:
        named = " ".join(f"--baseline {o}" for o in overrides)
        hint = "add another --baseline override that tells them apart, or name every override of the one you mean"
        for variant in variants:
            variant.named_baseline = wanted <= ran[id(variant)]
        if not any(v.named_baseline for v in variants):
            labels = "; ".join(v.label for v in variants)
            raise DataError(f"{named} matches no variant of this sweep; its variants: {labels}")
    else:
        named, hint = "ablation=baseline", "name the one to compare with: --baseline <override> (repeated)"
    for table in split_tables(variants):
        matched = [v for v in table.variants if v.is_baseline]
        if len(matched) < 2:
            continue
        exact = [v for v in matched if ran[id(v)] - wanted <= shared]
        if len(exact) != 1:
            if overrides or not wanted <= shared:
                raise DataError(f"{named} matches {len(matched)} variants of one table "
                                f"({'; '.join(v.label for v in matched)}): {hint}")
            for variant in matched:  # every job ran ablation=baseline: it names none
                variant.named_baseline = False
            continue
        for variant in matched:
            if variant is not exact[0]:
                variant.named_baseline = False


def _choices_and_dataset(job_dir: Path) -> tuple[dict, dict]:
    try:
        choices = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"] or {}
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        choices = {}
    try:
        dataset = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text()).get("dataset") or {}
    except (OSError, AttributeError, yaml.YAMLError):
        dataset = {}
    return dict(choices), dict(dataset)


def describe_changes(table: "Table") -> None:
    """What each variant changes in the composed config: against the table's baseline, the row it is tested
    against (a study whose variants mostly share a change, such as beta1 = 0 beside a baseline at 0.5, would
    otherwise show the baseline as the one that changed); in a table without one, against the value most of its
    variants use.

    Read from .hydra/ (group choices and the unresolved config), so `loss=hinge` shows as a choice and
    `optimizer.betas` as one key, not as every interpolation that copies it.
    """
    variants = table.variants
    snapshots = [_config_snapshot(v.jobs[0].dir) for v in variants]
    if len(variants) < 2 or not any(snapshots):
        return
    keys = set().union(*snapshots)
    base = table.baseline
    if base is not None:
        reference = snapshots[variants.index(base)]
        usual = {k: repr(reference.get(k)) for k in keys}
    else:
        usual = {k: Counter(repr(s.get(k)) for s in snapshots).most_common(1)[0][0] for k in keys}
    for variant, snapshot in zip(variants, snapshots):
        changed = sorted(k for k in keys if repr(snapshot.get(k)) != usual[k])
        chosen_groups = {k[len("choice:"):] for k in changed if k.startswith("choice:")}
        lines = []
        for k in changed:
            if k.startswith("choice:"):
                lines.append(f"{k[len('choice:'):]}={snapshot.get(k)}")
            elif k.split(".", 1)[0] not in chosen_groups:  # a new group choice already says it
                lines.append(f"{k}={snapshot.get(k)}")
        variant.changes = "; ".join(lines)


def _config_snapshot(job_dir: Path) -> dict:
    snapshot = {}
    try:
        hydra = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
        for group, choice in (hydra["runtime"]["choices"] or {}).items():
            if not group.startswith("hydra/") and group not in ("ablation", "sweep", "seed_study"):
                snapshot[f"choice:{group}"] = choice
        config = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return snapshot
    snapshot.update({k: v for k, v in flatten(config).items() if k.split(".", 1)[0] not in NOT_A_CHANGE})
    return snapshot


def table_columns(variants: list[Variant], every_metric: bool = False) -> list[str]:
    """The headline metrics (report.md) or, with every_metric, also every other metric with a direction (report.csv)."""
    present = {m for v in variants for job in v.ok_jobs for m in job.final}
    columns = []
    for pattern in registry.report_columns():  # scalars without a direction (fid/n_samples) are no column
        columns += sorted(m for m in present if fnmatch(m, pattern) and direction(m) and m not in columns)
    if every_metric:
        columns += sorted(m for m in present if direction(m) and m not in columns and m not in TRAILING_COLUMNS)
        columns += sorted(m for m in present if m.startswith("cost/"))  # no best, no test: what a variant costs
    columns += [m for m in TRAILING_COLUMNS if m in present]
    return columns


def best_variants(variants: list[Variant], metric: str) -> set[str]:
    """Labels of the variants with the best mean (all of them on a tie); none when every variant ties."""
    sign = direction(metric)
    means = {v.label: v.stats(metric)[0] for v in variants if v.stats(metric) is not None}
    if not sign or len(means) < 2:
        return set()
    best = (max if sign > 0 else min)(means.values())
    winners = {label for label, mean in means.items() if math.isclose(mean, best, rel_tol=1e-9, abs_tol=1e-12)}
    return winners if len(winners) < len(means) else set()


def _fmt(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}" if abs(value) < 100 else f"{value:.1f}"
    return f"{value:.3e}"


# ---- statistics against the baseline ---------------------------------------------------------------
ALPHA = 0.05  # significance level of the two-sided Welch test
CORRECTIONS = ("holm", "none")  # report --correction


@dataclass
class Comparison:
    """A variant's seeds against the baseline's seeds for one metric."""

    p: float | None  # Welch's two-sided p, None when there is no test
    n: int
    n_baseline: int
    text: str        # what the cell shows: "p=0.012", "n.s. (p=0.31)", "n<2: no test", ...
    p_adjusted: float | None = None  # p after the correction for the table's other variants (= p when none applies)
    difference: float | None = None  # variant mean - baseline mean
    # Its Welch confidence interval, None without a test: at 1 - ALPHA, or, with the table's p-values corrected
    # (holm, several variants), at the level Holm's test used for it (`holm_levels`), so that it spans 0 exactly
    # when the cell says n.s.
    interval: tuple[float, float] | None = None
    confidence: float = 1 - ALPHA  # the interval's level (raised by Holm's correction)

    @property
    def significant(self) -> bool:
        return self.p_adjusted is not None and self.p_adjusted < ALPHA


def holm(p_values: list[float]) -> list[float]:
    """Holm's (1979) step-down adjustment of m p-values: the i-th smallest times (m - i + 1), never below the one
    before it, at most 1. Adjusted p < ALPHA keeps the chance of any false "significant" among the m at most ALPHA,
    whatever their dependence (every variant here is tested against the same baseline seeds)."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def holm_levels(p_values: list[float], alpha: float) -> list[float]:
    """The level at which Holm's step-down test judges each p: the i-th smallest against alpha / (m - i + 1) as long
    as every smaller one was below its own; from the first that is not, all the rest against that step's level.
    A Welch interval at 1 - level spans 0 exactly when `holm`'s adjusted p is >= alpha, so the intervals drawn
    agree with the table. They are not simultaneous: Bonferroni's (all at alpha / m) would be, and are wider."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    levels, stopped_at = [alpha] * len(p_values), None
    for rank, index in enumerate(order):
        level = stopped_at or alpha / (len(p_values) - rank)
        if stopped_at is None and p_values[index] >= level:
            stopped_at = level
        levels[index] = level
    return levels


def welch(values: list[float], baseline: list[float]) -> Comparison:
    """Welch's t-test (unequal variances; scipy.stats.ttest_ind(equal_var=False)) of a variant against the baseline.

    Welch rather than a bootstrap: with 2-5 seeds per arm a bootstrap resamples too few values to give an interval,
    while the t-test states its assumption (roughly normal seed-to-seed spread) and its degrees of freedom.
    """
    n, m = len(values), len(baseline)
    difference = statistics.fmean(values) - statistics.fmean(baseline) if values and baseline else None
    if n < 2 or m < 2:
        return Comparison(None, n, m, "n<2: no test", difference=difference)
    if statistics.pvariance(values) == 0 and statistics.pvariance(baseline) == 0:
        same = math.isclose(values[0], baseline[0], rel_tol=1e-12, abs_tol=1e-15)
        return Comparison(None, n, m, "n.s. (identical)" if same else "no spread: no test", difference=difference)
    import warnings

    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # nearly equal seeds: scipy warns, the p it returns is still the right answer
        warnings.filterwarnings("ignore", message="Precision loss", category=RuntimeWarning)
        p = float(ttest_ind(values, baseline, equal_var=False).pvalue)
    return Comparison(p, n, m, _fmt_p(p) if p < ALPHA else f"n.s. ({_fmt_p(p)})", p_adjusted=p,
                      difference=difference, interval=welch_interval(values, baseline, ALPHA))


def welch_interval(values: list[float], baseline: list[float], alpha: float) -> tuple[float, float]:
    """The 1 - alpha confidence interval of mean(values) - mean(baseline) that Welch's test is about:
    d +- t(1 - alpha/2, df) * se, se^2 = s1^2/n + s2^2/m, with Welch-Satterthwaite's
    df = se^4 / ((s1^2/n)^2 / (n - 1) + (s2^2/m)^2 / (m - 1)). Needs n, m >= 2 and some spread."""
    from scipy.stats import t as student_t

    n, m = len(values), len(baseline)
    a, b = statistics.variance(values) / n, statistics.variance(baseline) / m
    se = math.sqrt(a + b)
    df = (a + b) ** 2 / (a * a / (n - 1) + b * b / (m - 1))
    half = float(student_t.ppf(1 - alpha / 2, df)) * se
    difference = statistics.fmean(values) - statistics.fmean(baseline)
    return difference - half, difference + half


def _fmt_p(p: float) -> str:
    return "p<0.001" if p < 1e-3 else f"p={p:.2g}"


@dataclass
class Table:
    """Variants on one dataset, compared with the baseline among them."""

    variants: list[Variant]
    title: str = ""
    correction: str = "holm"  # of each metric's p-values over the variants tested against the baseline
    _comparisons: dict = field(default_factory=dict, repr=False)  # metric -> {variant label: Comparison}

    @property
    def baseline(self) -> Variant | None:
        # A table without ablation=baseline (and no --baseline) compares with the jobs that ran only the settings
        # every job shares: separate runs `python train.py` and `python train.py loss=hinge` put the first there.
        return next((v for v in self.variants if v.is_baseline), None) or next(
            (v for v in self.variants if v.label == SHARED_ONLY and v.named_baseline is None), None)

    def comparison(self, variant: Variant, metric: str) -> Comparison | None:
        if metric not in self._comparisons:
            self._comparisons[metric] = self._compare(metric)
        return self._comparisons[metric].get(variant.label)

    def _compare(self, metric: str) -> dict[str, Comparison]:
        """Every variant against the baseline on `metric`; with several tests, their p-values corrected together:
        a sweep of 7 variants at ALPHA 0.05 would otherwise call about one in three unchanged metrics a change."""
        base = self.baseline
        if base is None:
            return {}
        compared = [v for v in self.variants if v is not base and v.values(metric)]
        found = {v.label: welch(v.values(metric), base.values(metric)) for v in compared}
        tested = [v for v in compared if found[v.label].p is not None]
        if self.correction == "holm" and len(tested) > 1:
            p_values = [found[v.label].p for v in tested]
            for variant, adjusted, level in zip(tested, holm(p_values), holm_levels(p_values, ALPHA)):
                comparison = found[variant.label]
                comparison.p_adjusted = adjusted
                comparison.interval = welch_interval(variant.values(metric), base.values(metric), level)
                comparison.confidence = 1 - level
                raw, corrected = _fmt_p(comparison.p), f"Holm {_fmt_p(adjusted)}"
                if adjusted < ALPHA:
                    comparison.text = f"{raw} ({corrected})"
                elif comparison.p < ALPHA:  # would have been called a change without the correction
                    comparison.text = f"n.s. after Holm ({raw}, {corrected})"
        return found

    def significant_best(self, metric: str) -> set[str]:
        """Best mean AND significantly different from the baseline (the baseline: from every other variant)."""
        base = self.baseline
        if base is None:
            return set()
        winners = set()
        for label in best_variants(self.variants, metric):
            variant = next(v for v in self.variants if v.label == label)
            if variant is base:
                others = [self.comparison(v, metric) for v in self.variants if v is not base and v.values(metric)]
                if others and all(c is not None and c.significant for c in others):
                    winners.add(label)
            elif (comparison := self.comparison(variant, metric)) is not None and comparison.significant:
                winners.add(label)
        return winners

    def reference(self, variant: Variant, metric: str) -> float | None:
        return reference_study.reference_value(variant.choices.get("experiment"), variant.choices.get("ablation"), metric)


def split_tables(variants: list[Variant], correction: str = "holm") -> list[Table]:
    """One table per dataset (in sweep order): a seed-study sweep holds Table 1 (digits) and Table 2 (faces)."""
    by_dataset: dict[str, list[Variant]] = {}
    for variant in variants:
        by_dataset.setdefault(str(variant.choices.get("dataset", variant.dataset.get("name", ""))), []).append(variant)
    tables = []
    for group in by_dataset.values():
        experiments = {v.choices.get("experiment") for v in group}
        reference = reference_study.table_for(experiments.pop()) if len(experiments) == 1 else None
        title = reference.title.split(":")[0] + " of the reference study" if reference else ""
        tables.append(Table(group, title if len(by_dataset) > 1 or reference else "", correction))
    return tables


def quality_columns(columns: list[str]) -> list[str]:
    """The metrics a variant draws better or worse samples by: those with a direction, less the train time (losses
    have none)."""
    return [m for m in columns if direction(m) and m != "train_time_s"]


def disagreements(table: Table, columns: list[str]) -> list[str]:
    """One line per variant that is the single best by some quality metrics and the single worst by others."""
    quality = quality_columns(columns)
    best_by: dict[str, list[str]] = {}
    worst_by: dict[str, list[str]] = {}
    for metric in quality:
        sign = direction(metric)
        means = {v.label: v.stats(metric)[0] for v in table.variants if v.stats(metric) is not None}
        if len(means) < 2:
            continue
        ordered = sorted(means.items(), key=lambda item: sign * item[1], reverse=True)  # best first
        (best, best_mean), (_, second_mean) = ordered[0], ordered[1]
        if not math.isclose(best_mean, second_mean, rel_tol=1e-9, abs_tol=1e-12):
            best_by.setdefault(best, []).append(metric)
        (worst, worst_mean), (_, next_mean) = ordered[-1], ordered[-2]
        if not math.isclose(worst_mean, next_mean, rel_tol=1e-9, abs_tol=1e-12):
            worst_by.setdefault(worst, []).append(metric)
    lines = []
    for variant in table.variants:
        best, worst = best_by.get(variant.label), worst_by.get(variant.label)
        if best and worst:
            line = (f"- `{variant.label}`: best by {', '.join(best)} but worst by {', '.join(worst)}. The metrics "
                    "disagree about this variant: look at its samples before calling it better (clustering scores "
                    "reward a generator that collapses onto a few tight modes).")
            if table.baseline is not None and not any(_differs_from_baseline(table, variant, m) for m in best + worst):
                # With two variants every metric ranks one best and the other worst: say when that is all it is.
                line += (" None of these rankings rests on a significant difference from the baseline over seeds: "
                         "they may be seed noise.")
            lines.append(line)
    return lines


def _differs_from_baseline(table: Table, variant: Variant, metric: str) -> bool:
    """Whether `variant` differs significantly from the baseline on `metric` (the baseline: from any variant)."""
    others = [v for v in table.variants if v is not table.baseline] if variant is table.baseline else [variant]
    return any((c := table.comparison(v, metric)) is not None and c.significant for v in others)


def _signed(value: float) -> str:
    return ("+" if value > 0 else "") + _fmt(value)


def effect_line(table: Table, columns: list[str]) -> str:
    """How large each variant's change of the table's first ranked metric is, and how sure: the difference of
    means from the baseline with its Welch confidence interval (95%, or at Holm's level for it when the p-values
    are corrected). An interval that spans 0 is a change the seeds cannot tell from none. Empty without a baseline
    or a test."""
    base = table.baseline
    metric = next((m for m in columns if direction(m)), None)
    if base is None or metric is None:
        return ""
    shown = [(variant, comparison) for variant in table.variants if variant is not base
             for comparison in [table.comparison(variant, metric)] if comparison is not None and comparison.interval]
    if not shown:
        return ""
    tested = len(shown)
    corrected = any(comparison.confidence > 1 - ALPHA for _, comparison in shown)  # Table._compare decided it
    parts = []
    for variant, comparison in shown:
        low, high = comparison.interval
        at = f" at {100 * comparison.confidence:.3g}%" if corrected else ""
        parts.append(f"`{variant.label}` {_signed(comparison.difference)} [{_signed(low)}, {_signed(high)}]{at}")
    better = "lower" if direction(metric) < 0 else "higher"
    first, second = (100 * (1 - ALPHA / k) for k in (tested, max(tested - 1, 1)))
    level = (f"Welch confidence intervals, each at the level Holm's correction tested it among the {tested} variants "
             f"(the smallest p at {first:.3g}%, the next at {second:.3g}%, ...), so an interval clears 0 exactly "
             f"when its Holm p < {ALPHA:g}" if corrected else "95% confidence interval, Welch, not corrected")
    return (f"`{metric}` against the baseline ({better} is better; difference of means, {level}): "
            + "; ".join(parts) + ".")


def _percent(change: float) -> str:
    return f"{change:+.0f}%" if abs(change) >= 10 else f"{change:+.1f}%"


def cost_against_baseline(table: Table, variant: Variant) -> str:
    """What a variant's networks cost against its table's baseline, where they differ (NetworkSummary's cost/*
    scalars): "FLOPs/image G +15%, D +9.5%; params D +4.2%". Empty for the baseline, where nothing differs, and
    for runs that did not log them."""
    base = table.baseline
    if base is None or variant is base:
        return ""
    parts = []
    for what, label in (("flops", "FLOPs/image"), ("params", "params")):
        changes = []
        for network, short in (("G", "g"), ("D", "d")):
            mine, theirs = variant.stats(f"cost/{short}_{what}"), base.stats(f"cost/{short}_{what}")
            if mine and theirs and theirs[0] and not math.isclose(mine[0], theirs[0], rel_tol=1e-9):
                changes.append(f"{network} {_percent(100 * (mine[0] / theirs[0] - 1))}")
        if changes:
            parts.append(f"{label} " + ", ".join(changes))
    return "; ".join(parts)


def describe_data(variant: Variant) -> str:
    """The data a table was trained on, as the report names it (stand-ins said to be stand-ins)."""
    data = variant.dataset
    name = str(variant.choices.get("dataset") or data.get("name") or "?")
    size, crop = data.get("image_size"), data.get("crop")
    note = reference_study.DATA_NOTES.get(name, "")
    framing = f"{size}x{size}" if size else ""
    if crop:
        framing = f"centre {crop}x{crop} crop resized to {framing}"
    parts = [f"`dataset={name}`", framing, note]
    if name == "image_folder" and data.get("path"):
        parts.append(f"from {data['path']}")
    return ", ".join(p for p in parts if p)


def _cell(table: Table, variant: Variant, metric: str, bold: set[str]) -> str:
    stats = variant.stats(metric)
    reference = table.reference(variant, metric)
    ref = f" · ref {reference:g}" if reference is not None else ""
    if stats is None:
        if variant.ok_jobs:
            missing = "not logged" if ref else "–"
        else:
            missing = "failed" if any(job.state == "failed" for job in variant.jobs) else "unfinished"
        return missing + ref
    mean, std, n = stats
    text = f"{_fmt(mean)} ({n})" if std is None else f"{_fmt(mean)} ± {_fmt(std)} ({n})"
    if variant.label in bold:
        text = f"**{text}**"
    comparison = table.comparison(variant, metric)
    if comparison is not None and direction(metric):
        text += f" · {comparison.text}"
    return text + ref


def table_lines(table: Table, columns: list[str]) -> tuple[list[str], list[str]]:
    """The markdown rows of one table; columns the reference reports but no job logged are shown as 'not logged'."""
    wanted = dict(reference_study.reference_metrics(table.variants[0].choices.get("experiment")))
    missing = [pattern for pattern in wanted if not any(fnmatch(m, pattern) for m in columns)]
    columns = columns + missing
    header = ["variant", "changes", "seeds ok/run", *[f"{m} (Inception)" if m == "fid/*" else m for m in columns]]
    bold = {m: table.significant_best(m) if m not in missing else set() for m in columns}
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base = table.baseline
    for variant in table.variants:
        changes = "the baseline" if variant is base else variant.changes.replace("|", "\\|") or "—"
        if cost := cost_against_baseline(table, variant):
            changes += f" · cost: {cost}"
        rolled_back = sum(bool(job.rollbacks) for job in variant.ok_jobs)
        seeds = f"{len(variant.ok_jobs)}/{len(variant.jobs)}" + (f", {rolled_back} rolled back" if rolled_back else "")
        cells = [f"`{variant.label}`", changes, seeds]
        cells += [_cell(table, variant, metric, bold[metric]) for metric in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines, missing


def report_command(sweep_dirs: list[Path]) -> str:
    """The command that writes this report, without its options."""
    return " ".join(["python -m dcgan_lab.report", *map(str, sweep_dirs)])


def unequal_g_steps(table: Table, sweep_dirs: list[Path]) -> str | None:
    """A line when the table's finished jobs were read at different G steps (several D steps per G step, or other
    lengths): a variant with fewer G updates may only be behind. It names the --g-steps report that compares them."""
    jobs = [job for variant in table.variants for job in variant.ok_jobs if job.read_at_g_step is not None]
    if len({job.read_at_g_step for job in jobs}) < 2:
        return None
    lowest = min(job.read_at_g_step for job in jobs)
    common = max((step for step in epochs_end_together(jobs) if step <= lowest), default=None)
    steps = [(variant.label, sorted({job.read_at_g_step for job in variant.ok_jobs} - {None})) for variant in table.variants]
    how = (f"`{report_command(sweep_dirs)} --g-steps {common:g}` compares them at G step {common:g}"
           if common else "no G step ends an epoch of every job, so `--g-steps` cannot compare them")
    return (f"The jobs were read at different G steps ({'; '.join(f'`{label}` {few(s)}' for label, s in steps if s)}): "
            f"a variant with fewer G updates may only be behind. {how}.")


def write_markdown(path: Path, sweep_dirs: list[Path], variants, tables: list[Table], columns, common, jobs,
                   cut: str = "", evaluations: str | None = None, correction: str = "holm") -> None:
    """`cut`: where each job's values were read when not at its end (`cut_description`). The title names the folders
    reported, the first (where the report is) first."""
    ways = [f"{word} {', '.join(f'`{m}`' for m in columns if direction(m) == sign)}" for word, sign in (("lower", -1), ("higher", 1))
            if any(direction(m) == sign for m in columns)]  # from the registry (runs.direction)
    lines = [
        f"# Sweep report: {' + '.join(map(str, sweep_dirs))}",
        "",
        f"{len(jobs)} jobs, {len(variants)} variants. Cells: mean ± sample std (n seeds; the value alone "
        f"for one seed) of each job's last logged value{cut}; beside it, Welch's t-test against the baseline row over seeds (two-sided; `p=` when "
        f"p < {ALPHA}, `n.s.` otherwise, `n<2: no test` with fewer than 2 seeds on either side; "
        + ("where a table tests several variants, each metric's p-values are corrected together by Holm's method "
           f"and `Holm p` < {ALPHA} is what counts as significant: `n.s. after Holm` marks a p < {ALPHA} that "
           "several tries would often give by chance; `--correction none` reports them uncorrected"
           if correction == "holm" else "uncorrected (`--correction none`): with several variants, some p < "
           f"{ALPHA} are chance") + f"); **bold** = best "
        f"mean of its table ({'; '.join(ways + ['losses have no best'])}) AND significantly different from the "
        "baseline." + (f" `ref` = the reference study's number for the same setting and change: {reference_study.SOURCE}."
                       if any(reference_study.table_for(t.variants[0].choices.get("experiment")) for t in tables) else "")
        + (" `cost:` what the variant's networks cost against the baseline's, where they differ: FLOPs of one "
           "image's forward pass and parameters, of G and of D (report.csv: `cost/*`)."
           if any(cost_against_baseline(t, v) for t in tables for v in t.variants) else ""),
    ]
    if len(sweep_dirs) > 1:
        counts = Counter(str(folder) for job in jobs for folder in sweep_dirs if job.dir.is_relative_to(folder))
        lines.append(f"Jobs of {len(sweep_dirs)} folders: {', '.join(f'`{f}` ({counts[str(f)]})' for f in sweep_dirs)}.")
    sweep_names = sorted({o.split("=", 1)[1] for job in jobs for o in job.overrides if override_key(o) == "sweep"})
    if sweep_names:
        lines.append(f"Named sweep: {', '.join(sweep_names)} (conf/sweep/).")
    if common:
        lines.append(f"Shared by every job: `{' '.join(common)}`")
    if evaluations:
        lines += ["", evaluations]
    for table in tables:
        table_columns_here = [m for m in columns if any(v.stats(m) for v in table.variants)]
        if table.title:
            lines += ["", f"## {table.title}"]
        if table.variants[0].choices.get("dataset") or table.variants[0].dataset.get("name"):
            lines += ["", f"Data: {describe_data(table.variants[0])}."]
        if table.baseline is None and len(table.variants) > 1:
            first = next(v for v in table.variants if v.label != SHARED_ONLY)
            flags = " ".join(f"--baseline {o}" for o in first.label.split(", "))  # exactly that variant
            what = ("Every job ran `ablation=baseline`, so it names no baseline in this table" if "ablation=baseline" in common
                    else "No baseline variant (`ablation=baseline`) in this table")
            lines += ["", f"{what}: no tests, no bold. Name one with `{report_command(sweep_dirs)} {flags}`."]
        elif table.baseline is not None and table.baseline.named_baseline:
            lines += ["", f"Baseline (`--baseline`): `{table.baseline.label}`."]
        elif table.baseline is not None and (passed_over := sum(v.named_baseline is False for v in table.variants)):
            lines += ["", f"Baseline: `{table.baseline.label}`, of the {passed_over + 1} variants that ran "
                          "`ablation=baseline` the one that ran nothing else (`--baseline <override>` names another)."]
        elif table.baseline is not None and table.baseline.label == SHARED_ONLY and len(table.variants) > 1:
            lines += ["", f"Baseline: `{SHARED_ONLY}`, the jobs that ran only the settings every job shares (no "
                          "`ablation=baseline` in this table; `--baseline <override>` names another)."]
        if unequal := unequal_g_steps(table, sweep_dirs):
            lines += ["", unequal]
        rows, missing = table_lines(table, table_columns_here)
        lines += [""] + rows
        if "fid/*" in missing:
            lines += ["", reference_study.FID_MISSING]
        reference = reference_study.table_for(table.variants[0].choices.get("experiment"))
        if reference is not None:
            remarks = [f"`ablation={a}`: {r}" for a, r in reference.remarks.items()]
            if remarks:
                lines += ["", "The reference's remarks: " + "; ".join(remarks) + "."]
        effect = effect_line(table, table_columns_here)
        if effect:
            lines += ["", effect]
        agreement = disagreements(table, table_columns_here)
        if agreement:
            lines += ["", "Where the metrics disagree:", *agreement]
    failed = [job for job in jobs if not job.ok]
    if failed:
        lines += ["", "## Failed or unfinished jobs", "", "| job | error |", "|---|---|"]
        for job in failed:
            error = " ".join(job.error.split())[:300] or "unknown error"  # one line, even for chained errors
            lines.append(f"| `{job.shown}` | {job.state}: {error.replace('|', '/')} |")
    rolled_back = [job for job in jobs if job.ok and job.rollbacks]
    if rolled_back:  # diverged, yet ok: its numbers measure the weights it went back to, trained on at cut rates
        lines += ["", "## Jobs that diverged and were rolled back", "",
                  "Each finished, but a NaN/Inf made the divergence guard reload an earlier checkpoint and cut the "
                  "learning rates (`callbacks.divergence_guard.action=rollback`): an instability of its variant.", "",
                  "| job | variant | seed | rollbacks (divergence at G step → back to G step) |", "|---|---|---|---|"]
        for job in rolled_back:
            steps = ", ".join(f"{r.get('diverged_at_g_step')} → {r.get('to_g_step')}" for r in job.rollbacks)
            lines.append(f"| `{job.shown}` | `{job.variant}` | {job.seed or '–'} | {steps} |")
    lines += ["", "Figures: `curves.png` (losses and metrics over G steps, mean ± std over seeds), `effects.png` (this "
              "table as a picture: each seed's final value, the mean, and the interval of the difference from the "
              "baseline, per metric), `samples.png` (last sample grid of each variant's first finished seed)."]
    path.write_text("\n".join(lines) + "\n")


def write_csv(path: Path, variants, tables: list[Table], columns) -> None:
    """Every metric's mean, std, n; its p against the baseline (raw and corrected) and the reference value (empty
    when none)."""
    table_of = {v.label: table for table in tables for v in table.variants}
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        per_metric = ("mean", "std", "n", "p", "p_adjusted", "diff", "diff_ci_low", "diff_ci_high", "diff_ci_level",
                      "ref")
        states = ("ok", "failed", "unfinished")
        writer.writerow(["variant", "changes", "jobs", *states, "rolled_back", *[f"{m}_{s}" for m in columns for s in per_metric],
                         "best_in", "significant_best_in"])
        for variant in variants:
            table = table_of[variant.label]
            counts = Counter(job.state for job in variant.jobs)
            row = [variant.label, variant.changes, len(variant.jobs), *(counts[state] for state in states),
                   sum(bool(job.rollbacks) for job in variant.ok_jobs)]
            for metric in columns:
                stats = variant.stats(metric)
                comparison = table.comparison(variant, metric)
                reference = table.reference(variant, metric)
                row += [stats[0], "" if stats[1] is None else stats[1], stats[2]] if stats else ["", "", 0]
                tested = comparison is not None and comparison.p is not None
                row += [comparison.p if tested else "", comparison.p_adjusted if tested else ""]
                row += ([comparison.difference, *comparison.interval, comparison.confidence] if tested
                        else ["", "", "", ""])
                row.append("" if reference is None else reference)
            row.append(" ".join(m for m in columns if variant.label in best_variants(table.variants, m)))
            row.append(" ".join(m for m in columns if variant.label in table.significant_best(m)))
            writer.writerow(row)


def cut_description(epochs: int | None, g_steps: int | None, seconds: float | None = None) -> str:
    """What report.md says of where each job's values were read, when not at its end."""
    if epochs is not None:
        return f" within its first {epochs} epochs (not its last value: the report after {epochs} epochs)"
    if g_steps is not None:
        return (f" up to G step {g_steps} (not its last value: the report at {g_steps} G steps, each job read at the end "
                "of the epoch in which it took them, whatever its D steps per G step)")
    if seconds is not None:
        return (f" within {seconds:g} s of training (not its last value: the report within {seconds:g} seconds, each job "
                "read at the end of its last epoch that ended by then, as `train_time_s` in its metrics.csv says; times "
                "from jobs that shared a machine differently do not compare)")
    return ""


def few(values) -> str:
    """'70, 140, 210, ..., 1400': a long list of numbers by its first three and its last."""
    shown = [f"{v:g}" for v in values]
    return ", ".join(shown if len(shown) <= 5 else [*shown[:3], "...", shown[-1]])


def epochs_end_together(jobs: list[Job]) -> list[float]:
    """The G steps at which an epoch of every one of `jobs` ends, in order (where --g-steps can read them all)."""
    return sorted(set.intersection(*(set(job.epoch_ends.values()) for job in jobs)))


def refuse_g_steps_between_epochs(jobs: list[Job], g_steps: int) -> None:
    """--g-steps N reads each job at the end of an epoch: one line when a finished job has no epoch ending at N."""
    finished = [job for job in jobs if job.ok]
    missing = [job for job in finished if g_steps not in job.epoch_ends.values()]
    if not missing:
        return
    together = epochs_end_together(finished)
    job = missing[0]
    choice = (f"every finished job's epochs end together at G steps {few(together)}: pass one of them" if together else
              "no G step ends an epoch of every finished job: compare them with --epochs")
    raise DataError(f"--g-steps {g_steps}: no epoch of {len(missing)} finished job(s) ends at G step {g_steps} (e.g. "
                    f"{job.shown}, whose epochs end at G steps {few(sorted(job.epoch_ends.values()))}); "
                    f"{choice}")


def refuse_seconds_outside_jobs(jobs: list[Job], seconds: float) -> None:
    """--seconds S reads each finished job at the end of its last epoch within S seconds: one line when a job logged
    no times, or when S is past its end or before its first epoch ended."""
    finished = [job for job in jobs if job.ok]
    untimed = [job for job in finished if not job.epoch_times]
    if untimed:
        raise DataError(f"--seconds {seconds:g}: {len(untimed)} finished job(s) logged no train_time_s at their epochs' "
                        f"ends (e.g. {untimed[0].shown}: trained before the lab logged it, or with "
                        "callbacks.throughput=null); compare them with --epochs or --g-steps")
    short = [job for job in finished if max(job.epoch_times.values()) < seconds]
    if short:
        last = min(max(job.epoch_times.values()) for job in short)
        raise DataError(f"--seconds {seconds:g} is past the end of {len(short)} finished job(s) (e.g. {short[0].shown}: "
                        f"its last epoch ended at {max(short[0].epoch_times.values()):.1f} s of training); pass "
                        f"--seconds {math.floor(last)} or less")
    early = [job for job in finished if min(job.epoch_times.values()) > seconds]
    if early:
        first = max(min(job.epoch_times.values()) for job in early)
        raise DataError(f"--seconds {seconds:g} is before the first epoch of {len(early)} finished job(s) ended (e.g. "
                        f"{early[0].shown}: at {min(early[0].epoch_times.values()):.1f} s); pass --seconds "
                        f"{math.ceil(first)} or more")


def build_report(sweep_dir: str | Path, epochs: int | None = None, baseline: list[str] | None = None,
                 correction: str = "holm", g_steps: int | None = None, more_sweeps=(),
                 seconds: float | None = None) -> dict[str, Path]:
    """Write report.md, report.csv, curves.png, effects.png and samples.png into the sweep folder; return their paths.
    `more_sweeps`: folders whose jobs join the report (read in place: a baseline run earlier, another study's jobs).

    With `epochs`: the same report of the values as they stood after that many epochs (e.g. a published
    study's length inside longer runs), written to <sweep>/after_<epochs>_epochs/. With `g_steps`: as they stood
    when each job had taken that many G steps (variants with several D steps per G step compared per G step), written
    to <sweep>/at_<g_steps>_g_steps/. With `seconds`: as each stood at the end of its last epoch within that many
    seconds of training (variants compared at equal time), written to <sweep>/within_<seconds>_seconds/. With
    `baseline` (overrides,
    e.g. ["loss=bce"]): the variant that ran them is the baseline of the tests, not `ablation=baseline`.
    `correction`: "holm" (each metric's p-values over a table's variants, Holm 1979) or "none"."""
    sweep_dirs = [Path(folder) for folder in (sweep_dir, *more_sweeps)]
    sweep_dir = sweep_dirs[0]
    for folder in sweep_dirs:
        if not folder.is_dir():
            raise DataError(f"{folder} is not a folder: pass a sweep folder such as multirun/<date>/<time>.")
    for index, folder in enumerate(sweep_dirs):  # a job found twice would count as two seeds
        inside = next((other for other in sweep_dirs[:index] if overlap(folder, other)), None)
        if inside is not None:
            raise DataError(f"{folder} and {inside} hold the same jobs (one is inside the other): pass only {inside}, "
                            "whose report takes every job below it.")
    if correction not in CORRECTIONS:
        raise DataError(f"--correction {correction}: use one of {', '.join(CORRECTIONS)}")
    for flag, count, what in (("--epochs", epochs, "after that many epochs"), ("--g-steps", g_steps, "at that many G steps")):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise DataError(f"{flag} {count} must be an integer >= 1 (the report {what}).")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not math.isfinite(seconds) or seconds <= 0):
        raise DataError(f"--seconds {seconds} must be a number > 0 (the report within that many seconds of training).")
    cuts = [flag for flag, value in (("--epochs", epochs), ("--g-steps", g_steps), ("--seconds", seconds)) if value is not None]
    if len(cuts) > 1:
        raise DataError(f"{' and '.join(cuts)} cut the jobs in different places: pass one of them.")
    jobs = find_jobs(sweep_dirs, epochs, g_steps, seconds)
    if epochs is not None:
        short = [job for job in jobs if job.ok and job.epochs < epochs]
        if short:  # their last values are not "after N epochs": refused before anything is written
            most = max(job.epochs for job in jobs)
            raise DataError(f"--epochs {epochs} is past the end of {len(short)} finished job(s) (e.g. "
                            f"{short[0].shown}: {short[0].epochs} epochs); the longest job ran "
                            f"{most}: pass --epochs {min(job.epochs for job in short)} or less")
    if g_steps is not None:
        refuse_g_steps_between_epochs(jobs, g_steps)
    if seconds is not None:
        refuse_seconds_outside_jobs(jobs, seconds)
    evaluations = use_evaluations(jobs, sweep_dirs) if not cuts else None  # final states only
    variants, common = group_variants(jobs)
    name_baseline(variants, baseline, common)
    tables = split_tables(variants, correction)  # one set of tests, which every file below shows
    for table in tables:  # what a variant changes, against the baseline it is tested against
        describe_changes(table)
    columns = table_columns(variants)
    every_column = table_columns(variants, every_metric=True)
    folder = (sweep_dir / f"after_{epochs}_epochs" if epochs is not None else
              sweep_dir / f"at_{g_steps}_g_steps" if g_steps is not None else
              sweep_dir / f"within_{seconds:g}_seconds" if seconds is not None else sweep_dir)
    folder.mkdir(exist_ok=True)
    out = {name: folder / name for name in ("report.md", "report.csv", "curves.png", "effects.png", "samples.png")}
    write_markdown(out["report.md"], sweep_dirs, variants, tables, columns, common, jobs, cut_description(epochs, g_steps, seconds),
                   evaluations, correction)
    write_csv(out["report.csv"], variants, tables, every_column)
    write_curves(out["curves.png"], variants, columns)
    write_effects(out["effects.png"], tables, quality_columns(columns))
    write_samples(out["samples.png"], variants)
    return out


def overlap(folder: Path, other: Path) -> bool:
    """Whether one of the two folders is the other or inside it."""
    folder, other = folder.resolve(), other.resolve()
    return folder.is_relative_to(other) or other.is_relative_to(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcgan_lab.report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a Hydra multirun folder, e.g. multirun/2026-01-31/12-00-00, or any "
                                          "folder of run folders, e.g. outputs/2026-01-31; the report goes there")
    parser.add_argument("more_sweeps", nargs="*", metavar="more_folders",
                        help="folders whose jobs join its report, read where they are (e.g. a baseline run earlier)")
    parser.add_argument("--wandb", choices=WANDB_CHOICES, default="auto",
                        help="the report as a run in the sweep's W&B group: auto (when the jobs logged to W&B, "
                             "in their mode), online, offline, or off")
    parser.add_argument("--epochs", type=int, default=None,
                        help="report each job's values after this many epochs (e.g. a published study's length) "
                             "into <sweep>/after_<N>_epochs/, not its last values")
    parser.add_argument("--g-steps", type=int, default=None, metavar="N",
                        help="report each job's values as they stood at G step N (read at the end of the epoch in which "
                             "it took them), e.g. to compare n_critic variants per G step, into <sweep>/at_<N>_g_steps/")
    parser.add_argument("--seconds", type=float, default=None, metavar="S",
                        help="report each job's values as they stood after S seconds of training (read at the end of "
                             "its last epoch that ended by then), e.g. to compare variants whose steps cost more at "
                             "equal time, into <sweep>/within_<S>_seconds/")
    parser.add_argument("--baseline", action="append", metavar="OVERRIDE",
                        help="the variant that ran this override (e.g. loss=bce; repeat to narrow it down) is the "
                             "baseline of the tests (default: the ablation=baseline variant)")
    parser.add_argument("--correction", choices=CORRECTIONS, default="holm",
                        help="holm (default): each metric's p-values over the variants compared with the baseline are "
                             "corrected together (Holm 1979), so a sweep of many variants does not find changes by "
                             "chance; none: uncorrected")
    args = parser.parse_args(argv)
    try:
        out = build_report(args.sweep_dir, args.epochs, args.baseline, args.correction, args.g_steps, args.more_sweeps,
                           args.seconds)
        wandb_run = report_to_wandb(args.sweep_dir, out, args.wandb)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in out.values():
        print(path)
    if wandb_run:
        print(f"W&B report run: {wandb_run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
