"""The chart of the summary table: one small bar chart per row (its worst condition), one bar per column,
the median with a min–max whisker, written as SVG through matplotlib (the `bench` extra).

matplotlib is imported here only, with the non-interactive Agg backend: the benchmark runs as root in a
network namespace without a display.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from bench.report import Results, summary

COLORS = {"raw": "#999999", "rclone": "#4c72b0", "s3fs": "#dd8452"}
STOREFS_COLOR = "#55a868"


def write_chart(path: Path, results: Results, columns: tuple[str, ...], storefs: str, title: str) -> Path:
    """Write the SVG to `path` and return it. Rows or cells without a value are drawn as empty slots."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    matplotlib.rcParams["svg.fonttype"] = "none"   # text stays text: smaller, searchable, diffable
    matplotlib.rcParams["svg.hashsalt"] = "storefs-bench"   # stable ids: the same results, the same file

    rows = summary(results, columns, storefs)
    ncols = 2
    nrows = max(1, math.ceil(len(rows) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(12, 2.3 * nrows + 0.8), squeeze=False)
    for ax, (row, condition) in zip(axes.flat, rows):
        medians, lows, highs = [], [], []
        for column in columns:
            cell = results.cells.get((row.key, condition, column))
            values = cell.values if cell and not cell.na else []
            mid = statistics.median(values) if values else 0.0
            medians.append(mid)
            lows.append(mid - min(values) if values else 0.0)
            highs.append(max(values) - mid if values else 0.0)
        positions = list(range(len(columns)))
        colors = [COLORS.get(c, STOREFS_COLOR) for c in columns]
        ax.barh(positions, medians, xerr=[lows, highs], color=colors, capsize=2, error_kw={"linewidth": 0.8})
        ax.set_yticks(positions, labels=list(columns), fontsize=7)
        ax.invert_yaxis()
        for y, value, high in zip(positions, medians, highs):
            if value:   # the number right of the whisker, so that the two do not overlap
                ax.text(value + high, y, f" {value:,.{row.decimals}f}", va="center", fontsize=6)
        better = "higher is better" if row.higher_better else "lower is better"
        ax.set_title(f"{row.label}\nworst: {condition} ({better})", fontsize=7, loc="left")
        ax.tick_params(axis="x", labelsize=6)
        ax.margins(x=0.18)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=8, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None})   # no time stamp: same results, same file
    plt.close(fig)
    return path
