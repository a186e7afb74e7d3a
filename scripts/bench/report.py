"""Results of the peer benchmark and the Markdown tables that show them.

Every row is measured in several conditions (a bash or a Python loop, another client busy on the bucket
or not, write-back delays at 0 or at their defaults, ...). A cell is one (row, condition, column): the
values of its runs (the median is shown, with min–max when there are several) and the errors of the runs
that failed; a cell whose runs all failed shows "fail" with a numbered footnote quoting the error, one
that does not apply shows "n/a".

The summary table shows each row in its WORST condition, the one that counts for a user: the condition
where storefs's ratio to the best peer is lowest (without a peer value: where storefs's own value is
worst). All columns of a summary line come from that one condition, so every ratio compares numbers
measured side by side. The full table below it has every condition. Ratios are oriented so that > 1
always means storefs is ahead.
"""
from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable

PEER_COLUMNS = ("rclone", "s3fs")


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    label: str
    higher_better: bool
    decimals: int
    conditions: tuple[str, ...] = ("default",)
    spread: bool = False     # show min–max in the summary too (a row known to be bimodal)


@dataclasses.dataclass
class Cell:
    values: list[float] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    na: str | None = None

    def value(self) -> float | None:
        return statistics.median(self.values) if self.values else None


class Results:
    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.cells: dict[tuple[str, str, str], Cell] = {}

    def row(self, key: str) -> Row:
        return next(r for r in self.rows if r.key == key)

    def cell(self, row: str, condition: str, column: str) -> Cell:
        return self.cells.setdefault((row, condition, column), Cell())

    def add(self, row: str, condition: str, column: str, value: float) -> None:
        self.cell(row, condition, column).values.append(value)

    def fail(self, row: str, condition: str, column: str, error: str) -> None:
        self.cell(row, condition, column).errors.append(error)

    def not_applicable(self, row: str, condition: str, column: str, why: str) -> None:
        self.cell(row, condition, column).na = why

    def fail_all(self, row: str, column: str, error: str) -> None:
        """`error` in every condition of `row` that has no value for `column` yet."""
        for condition in self.row(row).conditions:
            cell = self.cell(row, condition, column)
            if not cell.values and not cell.na:
                cell.errors.append(error)

    def na_all(self, row: str, column: str, why: str) -> None:
        for condition in self.row(row).conditions:
            self.not_applicable(row, condition, column, why)

    def value(self, row: str, condition: str, column: str) -> float | None:
        cell = self.cells.get((row, condition, column))
        return cell.value() if cell and not cell.na else None


def ratio(storefs: float | None, other: float | None, higher_better: bool) -> float | None:
    """storefs relative to `other`, > 1 when storefs is ahead; None when either is missing."""
    if storefs is None or other is None or storefs <= 0 or other <= 0:
        return None
    return storefs / other if higher_better else other / storefs


def best_peer(results: Results, row: Row, condition: str, columns: Iterable[str]) -> float | None:
    peers = [v for p in PEER_COLUMNS if p in columns
             for v in [results.value(row.key, condition, p)] if v is not None]
    if not peers:
        return None
    return max(peers) if row.higher_better else min(peers)


def worst_condition(results: Results, row: Row, storefs: str, columns: Iterable[str]) -> str:
    """The condition that counts: storefs's lowest ratio to the best peer; else its own worst value; else
    the first condition (nothing was measured)."""
    columns = tuple(columns)
    ratios = {c: ratio(results.value(row.key, c, storefs), best_peer(results, row, c, columns), row.higher_better)
              for c in row.conditions}
    rated = {c: r for c, r in ratios.items() if r is not None}
    if rated:
        return min(row.conditions, key=lambda c: rated.get(c, float("inf")))
    own = {c: v for c in row.conditions for v in [results.value(row.key, c, storefs)] if v is not None}
    if own:
        worst = min if row.higher_better else max
        return worst(own, key=lambda c: own[c])
    return row.conditions[0]


def _fmt(value: float, decimals: int) -> str:
    return f"{value:,.{decimals}f}"


def format_values(values: list[float], decimals: int, spread: bool) -> str:
    """The median, and with `spread` and several values also "(min–max)"."""
    text = _fmt(statistics.median(values), decimals)
    if spread and len(values) > 1:
        text += f" ({_fmt(min(values), decimals)}–{_fmt(max(values), decimals)})"
    return text


def format_ratio(factor: float | None) -> str:
    if factor is None:
        return "—"
    return f"{factor:.2f}×" if factor >= 0.1 else f"{factor:.1g}×"


class _Notes:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"


def _cell_text(results: Results, row: Row, condition: str, column: str, notes: _Notes, spread: bool) -> str:
    cell = results.cells.get((row.key, condition, column), Cell(na="not measured"))
    if cell.na:
        return f"n/a {notes.mark(f'{column}: {cell.na}')}"
    if cell.values:
        marks = "".join(notes.mark(f"{column}, {row.label} ({condition}): {len(cell.errors)} of "
                                   f"{len(cell.errors) + len(cell.values)} runs failed: {e}")
                        for e in dict.fromkeys(cell.errors))   # partial failure: worth its own note
        return format_values(cell.values, row.decimals, spread) + (f" {marks}" if marks else "")
    if cell.errors:
        return "fail " + "".join(notes.mark(f"{column}: {e}") for e in dict.fromkeys(cell.errors))
    return "—"


def _line(results: Results, row: Row, condition: str, columns: tuple[str, ...], storefs: str,
          versus: tuple[str, str] | None, notes: _Notes, spread: bool, label: str) -> str:
    texts = [_cell_text(results, row, condition, c, notes, spread) for c in columns]
    mine = results.value(row.key, condition, storefs)
    texts.append(format_ratio(ratio(mine, best_peer(results, row, condition, columns), row.higher_better)))
    texts.append(format_ratio(ratio(mine, results.value(row.key, condition, "raw"), row.higher_better)))
    if versus:
        texts.append(format_ratio(ratio(results.value(row.key, condition, versus[0]),
                                        results.value(row.key, condition, versus[1]), row.higher_better)))
    return f"| {label} | " + " | ".join(texts) + " |"


def summary(results: Results, columns: tuple[str, ...], storefs: str) -> list[tuple[Row, str]]:
    """(row, its worst condition) for every row: what the summary table and the chart show."""
    return [(row, worst_condition(results, row, storefs, columns)) for row in results.rows]


def render(results: Results, header: list[str], settings: list[str], columns: tuple[str, ...],
           storefs: str = "storefs", versus: tuple[str, str] | None = None, chart: str | None = None) -> str:
    """`storefs`: the column the storefs ratios use; `versus` (a, b): add an "a vs b" ratio column;
    `chart`: a file name to link under the summary."""
    notes = _Notes()
    titles = list(columns) + ["storefs vs best peer", "storefs vs raw"] + ([f"{versus[0]} vs {versus[1]}"]
                                                                          if versus else [])
    head = ["| workload | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(titles)]
    lines = list(header) + ["", "### Summary: each row in its worst condition", ""] + head
    for row, condition in summary(results, columns, storefs):
        lines.append(_line(results, row, condition, columns, storefs, versus, notes, row.spread,
                           f"{row.label} — worst: {condition}"))
    if chart:
        lines += ["", f"![each row in its worst condition]({chart})"]
    lines += ["", "### Every condition", ""] + head
    for row in results.rows:
        for condition in row.conditions:
            lines.append(_line(results, row, condition, columns, storefs, versus, notes, True,
                               f"{row.label} — {condition}"))
    lines.append("")
    lines.append(f"Ratios: > 1× means storefs ({storefs}) is ahead (faster, or less time/memory/traffic); \"best "
                 "peer\" is the better of rclone and s3fs in that condition; raw is the storefs provider called "
                 "directly, no mount. The summary shows each row in the condition where storefs's ratio to the "
                 "best peer is lowest. Cells: median of the runs, (min–max) in the full table."
                 + (f" {versus[0]} vs {versus[1]}: > 1× means {versus[0]} is ahead." if versus else ""))
    lines += [f"- {s}" for s in settings]
    if notes.texts:
        lines.append("")
        lines += [f"[{i}] {text}" for i, text in enumerate(notes.texts, start=1)]
    return "\n".join(lines) + "\n"
