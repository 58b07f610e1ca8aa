"""The benchmark report: the JSON lines of one `make bench` run rendered as `bench/report.md`.

Input is what the benches print (one JSON object a line, see the keys below) plus the lines the
runner (`python -m bench`) adds: one `{"run": {...}}` line first (date, machine, commit, load at
start) and one `{"bench": name, "elapsed_s": s, "exit": rc}` line after each bench. The report is
built from these lines alone, so `python -m bench.report bench/report.jsonl` renders a kept run
again, and the tests render sample lines without running anything.

Figure keys: bench, figure, value, unit, baseline (a number, or an object whose "value" is the
number: the queue bench reports its baseline layer that way), ratio (optional; when a line has no
"ratio" key the report shows value/baseline, except for figures that are ratios themselves),
target ({"max": x} or {"min": x}, on "value" unless "on": "ratio"), table/row/column (lines
sharing a "table" form one scaling table), note. Lines with "error" or "skipped" are listed apart.

Design choices:
- A target that cannot be checked (its figure has no value, or no ratio) is "—", never "yes".
- Scaling tables keep the order in which rows and columns first appear: the benches print them
  in the order they mean them to be read (10, 50, 100, 250 windows).
- Every figure is in the main table, those of scaling tables too: the tables are another view
  of the same lines, not another source.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keys the main table shows in its own columns (or the report uses); the rest are "details".
KNOWN = {"bench", "figure", "value", "unit", "baseline", "ratio", "target", "table", "row",
         "column", "note", "error", "skipped", "layer"}
SHARED_NOTE = ("The machine is shared (2 cores, several agents at once): absolute timings vary "
               "by 2-5x between runs. Each baseline was measured in the same run as its figure, "
               "so the ratios are the steadier numbers.")


def parse_lines(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """JSON objects from the run's output; anything else is returned apart (reported as such)."""
    lines: list[dict[str, Any]] = []
    other: list[str] = []
    for raw in text.splitlines():
        s = raw.strip()
        if not s:
            continue
        try:
            obj = json.loads(s)
        except ValueError:
            other.append(s)
            continue
        if isinstance(obj, dict):
            lines.append(obj)
        else:
            other.append(s)
    return lines, other


def number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def baseline_value(line: dict[str, Any]) -> float | None:
    b = line.get("baseline")
    if isinstance(b, dict):
        return number(b.get("value"))
    return number(b)


def ratio_of(line: dict[str, Any]) -> float | None:
    """The line's own ratio if it gives one (even null), else value/baseline where meaningful."""
    if "ratio" in line:
        return number(line["ratio"])
    v, b = number(line.get("value")), baseline_value(line)
    if v is None or b is None or b == 0 or line.get("unit") == "ratio":
        return None
    return v / b


@dataclass
class Verdict:
    text: str  # "≤ 30 ms", "ratio ≥ 0.5"
    holds: bool | None  # None: the measured quantity is missing


def target_of(line: dict[str, Any]) -> Verdict | None:
    t = line.get("target")
    if not isinstance(t, dict):
        return None
    on = t.get("on", "value")
    got = ratio_of(line) if on == "ratio" else number(line.get(on))
    unit = "" if on == "ratio" else str(line.get("unit") or "")
    parts: list[str] = []
    holds: bool | None = True if got is not None else None
    for key, sign in (("min", "≥"), ("max", "≤")):
        limit = number(t.get(key))
        if limit is None:
            continue
        parts.append(f"{sign} {fmt(limit)}")
        if got is not None and not (got >= limit if key == "min" else got <= limit):
            holds = False
    if not parts:
        return None
    prefix = "ratio " if on == "ratio" else ("" if on == "value" else f"{on} ")
    text = prefix + " and ".join(parts) + (f" {unit}" if unit and unit != "ratio" else "")
    return Verdict(text, holds)


def fmt(x: Any) -> str:
    """Numbers to about four significant figures, without exponent noise for everyday sizes."""
    n = number(x)
    if n is None:
        return "—" if x is None else str(x)
    if n == 0:
        return "0"
    a = abs(n)
    if a >= 1000:
        return f"{n:,.0f}"
    if a >= 100:
        return f"{n:.1f}".rstrip("0").rstrip(".")
    if a >= 1e-6:  # CPU shares of a camera are small: 0.0002 reads better than 2.00e-04
        digits = max(0, 3 - math.floor(math.log10(a)))
        return f"{n:.{digits}f}".rstrip("0").rstrip(".")
    return f"{n:.2e}"


def cell(x: Any) -> str:
    """Markdown table cell: no pipes or newlines from a note may break the table."""
    return str(x).replace("|", "\\|").replace("\n", " ")


def holds_text(v: Verdict | None) -> str:
    if v is None:
        return ""
    return {True: "yes", False: "**no**", None: "—"}[v.holds]


def details(line: dict[str, Any]) -> str:
    out = []
    for k, v in line.items():
        if k in KNOWN or isinstance(v, dict | list):
            continue
        out.append(f"{k}={fmt(v) if number(v) is not None else v}")
    b = line.get("baseline")
    if isinstance(b, dict) and b.get("figure"):
        out.insert(0, f"baseline: {b['figure']}")
    return ", ".join(out)


@dataclass
class Table:
    title: str
    rows: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def tables_of(figures: Iterable[dict[str, Any]]) -> list[Table]:
    tables: dict[str, Table] = {}
    for line in figures:
        title = line.get("table")
        if not title:
            continue
        t = tables.setdefault(str(title), Table(str(title)))
        row = str(line.get("row", line.get("figure", "")))
        col = str(line.get("column", line.get("unit", "value")))
        if row not in t.rows:
            t.rows.append(row)
        if col not in t.columns:
            t.columns.append(col)
        t.cells[(row, col)] = line
    return list(tables.values())


def render_table(t: Table) -> list[str]:
    """Rows × columns; a column whose lines carry baselines gets its baseline and ratio beside
    it, and a target column where any of its lines has a target."""
    def target_cell(ln: dict[str, Any]) -> str:
        v = target_of(ln)
        return f"{v.text} {holds_text(v)}" if v else ""

    groups: list[tuple[str, list[tuple[str, Any]]]] = []
    for col in t.columns:
        lines = [t.cells[(r, col)] for r in t.rows if (r, col) in t.cells]
        parts: list[tuple[str, Any]] = [(col, lambda ln: fmt(ln.get("value")))]
        if any(baseline_value(ln) is not None for ln in lines):
            parts += [(f"{col}: baseline", lambda ln: fmt(baseline_value(ln))),
                      (f"{col}: ratio", lambda ln: fmt(ratio_of(ln)))]
        if any(target_of(ln) for ln in lines):
            parts.append((f"{col}: target", target_cell))
        groups.append((col, parts))
    heads = ["", *(h for _c, parts in groups for h, _g in parts)]
    out = [f"### {t.title}", "", "| " + " | ".join(cell(h) for h in heads) + " |",
           "|" + "---|" * len(heads)]
    for row in t.rows:
        cells = [cell(row)]
        for col, parts in groups:
            line = t.cells.get((row, col))
            cells += [cell(g(line)) if line is not None else "" for _h, g in parts]
        out.append("| " + " | ".join(cells) + " |")
    units = sorted({str(ln.get("unit")) for ln in t.cells.values() if ln.get("unit")})
    if units:
        out += ["", f"Units: {', '.join(units)}."]
    return [*out, ""]


def render(lines: list[dict[str, Any]], other: list[str] | None = None) -> str:
    run = next((ln["run"] for ln in lines if isinstance(ln.get("run"), dict)), {})
    figures = [ln for ln in lines if "figure" in ln and "error" not in ln and "skipped" not in ln
               and "value" in ln]
    problems = [ln for ln in lines if "error" in ln or "skipped" in ln]
    runs = [ln for ln in lines if "elapsed_s" in ln and "figure" not in ln]

    out = ["# hallbox benchmark report", ""]
    if run:
        out += [f"- date: {run.get('date', '?')}",
                f"- machine: {run.get('cores', '?')} cores, {run.get('cpu', '?')}, "
                f"{run.get('memory', '?')}; load average at start {run.get('load', '?')}",
                f"- commit: {run.get('commit', '?')}",
                f"- command: `{run.get('command', 'make bench')}`"
                + (f", {fmt(run['elapsed_s'])} s in all" if "elapsed_s" in run else ""),
                f"- python: {run.get('python', '?')}", ""]
    out += [f"> {SHARED_NOTE}", ""]

    checked = [v for v in (target_of(ln) for ln in figures) if v is not None]
    if checked:
        held = sum(1 for v in checked if v.holds)
        failed = sum(1 for v in checked if v.holds is False)
        out += [f"Targets: {held} of {len(checked)} hold, {failed} do not"
                + (f", {len(checked) - held - failed} could not be checked"
                   if len(checked) - held - failed else "") + ".", ""]

    out += ["## Figures", ""]
    benches: list[str] = []
    for ln in figures:
        if ln.get("bench") not in benches:
            benches.append(str(ln.get("bench")))
    for bench in benches:
        mine = [ln for ln in figures if str(ln.get("bench")) == bench]
        out += [f"### {bench}", "",
                "| figure | value | unit | baseline | ratio | target | holds | details |",
                "|---|---|---|---|---|---|---|---|"]
        for ln in mine:
            v = target_of(ln)
            out.append("| " + " | ".join(cell(x) for x in (
                ln.get("figure"), fmt(ln.get("value")), ln.get("unit") or "",
                fmt(baseline_value(ln)), fmt(ratio_of(ln)), v.text if v else "",
                holds_text(v), details(ln))) + " |")
        notes = [ln for ln in mine if ln.get("note")]
        if notes:
            out.append("")
            out += [f"- `{ln['figure']}`: {ln['note']}" for ln in notes]
        out.append("")

    tables = tables_of(figures)
    if tables:
        out += ["## Scaling tables", ""]
        for t in tables:
            out += render_table(t)

    if problems or other:
        out += ["## Errors and skips", ""]
        for ln in problems:
            what = "error" if "error" in ln else "skipped"
            name = ln.get("bench", "?") + (f" / {ln['figure']}" if ln.get("figure") else "")
            out.append(f"- {name}: {what}: {cell(ln[what])}")
        for s in other or []:
            out.append(f"- not a JSON line: `{cell(s[:200])}`")
        out.append("")

    if runs:
        out += ["## Benches run", "", "| bench | seconds | exit |", "|---|---|---|"]
        out += [f"| {ln['bench']} | {fmt(ln['elapsed_s'])} | {ln.get('exit', '')} |"
                for ln in runs]
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    """`python -m bench.report [report.jsonl [report.md]]`: render a kept run again."""
    here = Path(__file__).resolve().parent
    src = Path(argv[0]) if argv else here / "report.jsonl"
    dst = Path(argv[1]) if len(argv) > 1 else src.with_suffix(".md")
    lines, other = parse_lines(src.read_text(encoding="utf-8"))
    dst.write_text(render(lines, other), encoding="utf-8")
    print(dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
