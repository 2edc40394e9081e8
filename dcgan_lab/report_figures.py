"""The report's figures: curves.png, effects.png, samples.png (dcgan_lab/report.py writes them beside report.md).

Each draws what the report has already worked out: its variants and its tables. Every test and interval in
effects.png is the table's own (Table.comparison), so the picture never disagrees with report.md; the only numbers
made here are means and spreads to draw (a curve's mean ± std over seeds at each step).
"""
from __future__ import annotations

import math
import statistics
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from dcgan_lab.plots import headless_pyplot
from dcgan_lab.runs import direction

if TYPE_CHECKING:
    from dcgan_lab.report import Comparison, Job, Table, Variant

CURVE_METRICS = ("loss/d", "loss/g", "D(x)", "D(G(z))")
# The objective's regularisers, each logged before its weight as penalty/<term> (GANObjective.penalty_names): a curve
# each, after the losses, for the variants that have the term on.
PENALTY_PREFIX = "penalty/"
LINE_STYLES = ("-", "--", ":", "-.")


def _mean_curve(jobs: list[Job], metric: str) -> tuple[list[float], list[float], list[float]]:
    """Mean and std over seeds at each step where any seed logged `metric`."""
    by_step: dict[float, list[float]] = {}
    for job in jobs:
        for step, value in job.curves.get(metric, []):
            by_step.setdefault(step, []).append(value)
    steps = sorted(s for s in by_step if not math.isnan(s))
    means = [statistics.fmean(by_step[s]) for s in steps]
    stds = [statistics.stdev(by_step[s]) if len(by_step[s]) > 1 else 0.0 for s in steps]
    return steps, means, stds


def write_curves(path: Path, variants, columns) -> None:
    plt = headless_pyplot()

    logged = {m for v in variants for job in v.ok_jobs for m in job.curves}
    metrics = ([m for m in CURVE_METRICS if m in logged] + sorted(m for m in logged if m.startswith(PENALTY_PREFIX))
               + [m for m in columns if m in logged and m not in CURVE_METRICS])
    if not metrics:
        metrics = ["loss/d"]  # an empty panel that says so, rather than no file
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.4 * nrows), squeeze=False)
    # One colour (and, past ten variants, dash) per variant in every panel: a panel that only some variants log
    # (a penalty) would otherwise draw them in the colours the legend gives the first variants.
    styles = {variant.label: {"color": f"C{i % 10}", "linestyle": LINE_STYLES[i // 10 % len(LINE_STYLES)]}
              for i, variant in enumerate(variants)}
    legend: dict[str, object] = {}
    for ax, metric in zip(axes.flat, metrics):
        for variant in variants:
            steps, means, stds = _mean_curve(variant.ok_jobs, metric)
            if not steps:
                continue
            style = styles[variant.label]
            line, = ax.plot(steps, means, label=variant.label, marker="o" if len(steps) < 5 else None, **style)
            legend.setdefault(variant.label, line)
            ax.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                            color=style["color"], alpha=0.15)
        ax.set_title(metric)
        ax.set_xlabel("G step")
        if not ax.lines:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    labels = [variant.label for variant in variants if variant.label in legend]
    if labels:
        fig.legend([legend[label] for label in labels], labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.04 + 0.03 * math.ceil(len(labels) / 4), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# effects.png: a variant significantly better (+1) or worse (-1) than the baseline after the correction, or neither (0).
EFFECT_COLOURS = {1: "tab:green", -1: "tab:red", 0: "0.5"}


def effect_sign(comparison: Comparison | None, metric: str) -> int:
    """+1 when a variant's `comparison` with the baseline on `metric` says significantly better, -1 significantly
    worse, else 0."""
    if comparison is None or not comparison.significant:
        return 0
    return 1 if comparison.difference * direction(metric) > 0 else -1


def _effect_limits(values: list[float]) -> tuple[float, float]:
    """The x range of an effects panel: every seed's value with a margin. Intervals are not part of it: with 2 seeds
    and Holm's levels they can span a hundred times the seeds' spread, and would squeeze the dots into a line."""
    low, high = min(values), max(values)
    pad = 0.12 * (high - low) or 0.1 * abs(high) or 0.05
    return low - pad, high + pad


def _draw_effects(ax, table: Table, metric: str, order: list[Variant]) -> None:
    """One panel of effects.png: a row per variant in `order`, top to bottom."""
    base = table.baseline
    base_mean = statistics.fmean(base.values(metric)) if base is not None and base.values(metric) else None
    left, right = _effect_limits([x for v in order for x in v.values(metric)])
    ax.set_xlim(left, right)
    if base_mean is not None:
        ax.axvline(base_mean, color="black", linestyle="--", linewidth=1, zorder=1)
    for y, variant in enumerate(order):
        values = variant.values(metric)
        if not values:
            ax.text(0.5, y, "–", ha="center", va="center", transform=ax.get_yaxis_transform())
            continue
        comparison = table.comparison(variant, metric) if variant is not base else None
        colour = "black" if variant is base else EFFECT_COLOURS[effect_sign(comparison, metric)]
        ax.scatter(values, [y] * len(values), s=16, color=colour, alpha=0.45, linewidths=0, zorder=2)
        if comparison is not None and comparison.interval is not None:
            # The difference's interval around the variant's mean (baseline mean + difference): it crosses the
            # dashed line exactly when the interval of the difference spans 0. Past the panel's edge: an arrowhead.
            low, high = (base_mean + end for end in comparison.interval)
            ax.plot([max(low, left), min(high, right)], [y, y], color=colour, linewidth=2.2, zorder=3)
            if low < left:
                ax.plot([left], [y], marker="<", markersize=7, color=colour, clip_on=False, zorder=3)
            if high > right:
                ax.plot([right], [y], marker=">", markersize=7, color=colour, clip_on=False, zorder=3)
        ax.scatter([statistics.fmean(values)], [y], s=50, marker="D", color=colour, zorder=4)
    ax.set_ylim(len(order) - 0.5, -0.5)
    ax.locator_params(axis="x", nbins=5)  # long tick labels (-0.025) ran into each other at matplotlib's default
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)


def write_effects(path: Path, tables: list[Table], metrics: list[str]) -> None:
    """The table as a picture: a panel per quality metric (a row of panels per table), a row per variant with
    each seed's final value (small dots), the mean (diamond) and the confidence interval of its difference from
    the baseline drawn around that mean (the report's intervals: each at the level Holm's correction tested it), so
    a bar crosses the baseline's mean (dashed) exactly when the table calls the change n.s. Green / red:
    significantly better / worse than the baseline after the correction; grey: neither; black: the baseline.
    `tables`: the report's tables (one per dataset); `metrics`: its quality columns, in its order."""
    plt = headless_pyplot()

    ncols = min(3, len(metrics)) or 1
    rows = []  # (table, its variants baseline first, the metrics of one row of panels)
    for table in tables:
        order = sorted(table.variants, key=lambda v: v is not table.baseline)
        logged = [m for m in metrics if any(v.values(m) for v in table.variants)]
        rows += [(table, order, logged[i:i + ncols]) for i in range(0, len(logged), ncols)]
    if not rows:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no finished job logged a metric with a better direction: nothing to compare",
                ha="center", va="center", fontsize=9)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    corrected = any(table.correction == "holm" for table in tables)
    key = ("dots: seeds' final values; diamond: mean; bar: "
           + ("confidence interval of the difference from the baseline at Holm's level for it (report.md)"
              if corrected else "95% interval of the difference from the baseline")
           + " (dashed: its mean), an arrowhead where it runs past the panel; green/red: significantly better/worse")
    width = 3.8 * ncols + 2.2
    key = textwrap.fill(key, int(width * 14))  # about 14 characters an inch at 8 points: one panel's figure too
    key_height = 0.1 + 0.15 * (key.count("\n") + 1)
    # Rows are evenly spaced, so each is as tall as the panel's longest wrapped label (about 0.14 inch a line at 8
    # points): a variant of several long overrides wraps to 5 lines or more, and such labels ran into each other.
    labels = {id(v): wrap_label(v.label, 30) for table in tables for v in table.variants}
    row_height = [max(0.42, 0.14 * max(labels[id(v)].count("\n") + 1 for v in order) + 0.08) for _, order, _ in rows]
    heights = [0.9 + step * len(order) for step, (_, order, _) in zip(row_height, rows)]
    fig, axes = plt.subplots(len(rows), ncols, figsize=(width, sum(heights) + 0.5 + key_height), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for (table, order, row_metrics), row_axes in zip(rows, axes):
        where = f"{table.title or table.variants[0].choices.get('dataset', '')}: " if len(tables) > 1 else ""
        for column, ax in enumerate(row_axes):
            if column >= len(row_metrics):
                ax.axis("off")
                continue
            metric = row_metrics[column]
            _draw_effects(ax, table, metric, order)
            ax.set_title(f"{where}{metric} ({'lower' if direction(metric) < 0 else 'higher'} is better)", fontsize=9)
            ax.set_yticks(range(len(order)), [labels[id(v)] for v in order] if column == 0 else [],
                          fontsize=8)
    fig.text(0.5, 0.005, key, ha="center", va="bottom", fontsize=8)
    fig.tight_layout(rect=(0, key_height / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def wrap_label(label: str, width: int) -> str:
    """A variant's label in lines of about `width` characters, broken at spaces, and a longer override after its
    `=`, never inside a name or value (textwrap cut `model.d_conditioning=projection` into `...=project` / `ion`)."""
    lines = []
    for line in textwrap.wrap(label, width, break_long_words=False, break_on_hyphens=False):
        cut = line.find("=") + 1
        lines += [line[:cut], line[cut:]] if len(line) > width and 0 < cut < len(line) else [line]
    return "\n".join(lines)


def write_samples(path: Path, variants) -> None:
    """One panel per variant: its first finished seed's grid of the state the report reads (samples/<job.grid>)."""
    plt = headless_pyplot()

    titles = [wrap_label(variant.label, 28) for variant in variants]
    # The figure grows with the longest title (a variant of several overrides wraps to 5 lines or more), and each
    # square grid sits at its panel's bottom: centred, it left the room under it and cut the title's first lines.
    lines = max(title.count("\n") for title in titles) + 2  # + the "(seed N)" line
    fig, axes = plt.subplots(1, len(variants), figsize=(3.2 * len(variants), 3.3 + 0.16 * lines), squeeze=False)
    for ax, variant, title in zip(axes.flat, variants, titles):
        ax.axis("off")
        ax.set_anchor("S")
        grid = next((job for job in variant.ok_jobs if (job.dir / "samples" / job.grid).exists()), None)
        if grid is None:
            job = next((j for j in variant.jobs if j.state == "failed"), variant.jobs[0])
            reason = f"{job.state}: {job.error}" if not variant.ok_jobs else f"no samples/{variant.ok_jobs[0].grid}"
            ax.text(0.5, 0.5, "\n".join(textwrap.wrap(reason, 30)[:6]), ha="center", va="center",
                    fontsize=8, color="darkred", transform=ax.transAxes)
        else:
            ax.imshow(plt.imread(grid.dir / "samples" / grid.grid), cmap="gray")
            title += f"\n(seed {grid.seed})" if grid.seed else ""
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
