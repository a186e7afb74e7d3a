"""Results of the peer benchmark and the one Markdown table that shows them.

A cell holds the values of its runs (the median is shown) and the errors of the runs that failed; a cell
whose runs all failed shows "fail" with a numbered footnote quoting the error, one that does not apply
(a peer on a non-S3 backend) shows "n/a". Ratios are oriented so that > 1 always means storefs is ahead.
storefs has one column per FUSE binding; the "storefs vs" ratios are about the `storefs` column given to
render() (the default binding), and a last ratio compares the two bindings.
"""
from __future__ import annotations

import dataclasses
import statistics

PEER_COLUMNS = ("rclone", "s3fs")


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    label: str
    higher_better: bool
    decimals: int


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
        self.cells: dict[tuple[str, str], Cell] = {}

    def cell(self, row: str, column: str) -> Cell:
        return self.cells.setdefault((row, column), Cell())

    def add(self, row: str, column: str, value: float) -> None:
        self.cell(row, column).values.append(value)

    def fail(self, row: str, column: str, error: str) -> None:
        self.cell(row, column).errors.append(error)

    def not_applicable(self, row: str, column: str, why: str) -> None:
        self.cell(row, column).na = why


def _fmt(value: float, decimals: int) -> str:
    return f"{value:,.{decimals}f}"


def _factor(storefs: float | None, other: float | None, higher_better: bool) -> str:
    if storefs is None or other is None or storefs <= 0 or other <= 0:
        return "—"
    factor = storefs / other if higher_better else other / storefs
    return f"{factor:.2f}×" if factor >= 0.1 else f"{factor:.1g}×"


def render(results: Results, header: list[str], settings: list[str], columns: tuple[str, ...],
           storefs: str = "storefs", versus: tuple[str, str] | None = None) -> str:
    """`storefs`: the column the storefs ratios use; `versus` (a, b): add an "a vs b" ratio column."""
    notes: list[str] = []

    def note(text: str) -> str:
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"

    lines = list(header) + [""]
    titles = list(columns) + ["storefs vs best peer", "storefs vs raw"]
    if versus:
        titles.append(f"{versus[0]} vs {versus[1]}")
    lines.append("| workload | " + " | ".join(titles) + " |")
    lines.append("|---|" + "---:|" * len(titles))
    for row in results.rows:
        texts = []
        for column in columns:
            cell = results.cells.get((row.key, column), Cell(na="not measured"))
            if cell.na:
                texts.append(f"n/a {note(f'{column}: {cell.na}')}")
            elif cell.values:
                marks = "".join(note(f"{column}, {row.label}: {len(cell.errors)} of "
                                     f"{len(cell.errors) + len(cell.values)} runs failed: {e}")
                                for e in dict.fromkeys(cell.errors))   # partial failure: worth its own note
                texts.append(_fmt(cell.value(), row.decimals) + (f" {marks}" if marks else ""))
            elif cell.errors:
                texts.append("fail " + "".join(note(f"{column}: {e}") for e in dict.fromkeys(cell.errors)))
            else:
                texts.append("—")
        value = {c: results.cells[(row.key, c)].value() if (row.key, c) in results.cells else None
                 for c in set(columns) | {"raw", storefs}}
        peers = [value[p] for p in PEER_COLUMNS if p in columns and value[p] is not None]
        best = (max(peers) if row.higher_better else min(peers)) if peers else None
        texts.append(_factor(value[storefs], best, row.higher_better))
        texts.append(_factor(value[storefs], value["raw"], row.higher_better))
        if versus:
            texts.append(_factor(value.get(versus[0]), value.get(versus[1]), row.higher_better))
        lines.append(f"| {row.label} | " + " | ".join(texts) + " |")
    lines.append("")
    lines.append(f"Ratios: > 1× means storefs ({storefs}) is ahead (faster, or less time/memory); \"best peer\" "
                 "is the better of rclone and s3fs on that row; raw is the storefs provider called directly, "
                 "no mount." + (f" {versus[0]} vs {versus[1]}: > 1× means {versus[0]} is ahead." if versus else ""))
    lines += [f"- {s}" for s in settings]
    if notes:
        lines.append("")
        lines += [f"[{i}] {text}" for i, text in enumerate(notes, start=1)]
    return "\n".join(lines) + "\n"
