"""The benchmark report generator (bench/report.py) on sample lines: targets on the value and on
the ratio, holding and failing, a scaling table, an error and a skip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.report import parse_lines, ratio_of, render, target_of

ROOT = Path(__file__).resolve().parents[1]

RUN = {"run": {"date": "2026-11-24 07:30 UTC", "cores": 2, "cpu": "Sample CPU @ 2.0GHz",
               "memory": "7.8 GiB RAM", "load": "1.50 1.20 0.90", "commit": "abc123def456",
               "python": "3.11.2", "command": "make bench"}}
SAMPLE = [
    RUN,
    {"bench": "devices", "figure": "call_to_led_50_windows_p99", "value": 23.1, "unit": "ms",
     "baseline": 8.2, "target": {"max": 30}, "note": "50 windows at once",
     "devices": "keypads | boards"},
    {"bench": "devices", "figure": "call_to_led_250_windows_p99", "value": 66.0, "unit": "ms",
     "baseline": 9.0, "target": {"max": 30},
     "table": "call → board latency by hall size", "row": "250 windows", "column": "p99 ms"},
    {"bench": "devices", "figure": "call_to_led_10_windows_p99", "value": 4.5, "unit": "ms",
     "baseline": 3.0, "table": "call → board latency by hall size", "row": "10 windows",
     "column": "p99 ms"},
    {"bench": "link", "figure": "outbox_events_per_s", "value": 8000, "unit": "events/s",
     "baseline": 16000, "ratio": 0.5, "target": {"min": 0.8, "on": "ratio"}},
    {"bench": "queue", "figure": "http_over_runtime.tickets_issued_per_s", "value": 0.61,
     "unit": "ratio", "baseline": 2000.0, "target": {"min": 0.5}},
    {"bench": "queue", "layer": "http", "figure": "http.tickets_issued_per_s", "value": 1200.0,
     "unit": "tickets/s", "p50_ms": 5.2, "baseline": {"layer": "domain", "value": 9600.0,
                                                       "figure": "domain.tickets_issued_per_s"}},
    {"bench": "video", "figure": "recording_cpu_4_cameras", "value": 0.006, "unit": "cores",
     "baseline": 0.005, "target": {"max": 1.1, "on": "ratio"},
     "table": "recording CPU by cameras", "row": "4 cameras", "column": "cores"},
    {"bench": "video", "figure": "export_5min_clip", "value": None, "unit": "s",
     "baseline": 0.2, "target": {"max": 1}},
    {"bench": "link", "figure": "ingest_pg", "skipped": "no PostgreSQL"},
    {"bench": "backup", "error": "RuntimeError: disk full"},
    {"bench": "backup", "elapsed_s": 12.5, "exit": 1},
]


def sample_text() -> str:
    return "\n".join(json.dumps(x, ensure_ascii=False) for x in SAMPLE) + "\nTraceback oops\n"


def row_of(md: str, figure: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {figure} |"))
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_targets_on_value_and_ratio_hold_or_fail() -> None:
    lines, _ = parse_lines(sample_text())
    by = {ln.get("figure"): ln for ln in lines}
    v = target_of(by["call_to_led_50_windows_p99"])
    assert v is not None and v.holds is True and v.text == "≤ 30 ms"
    v = target_of(by["call_to_led_250_windows_p99"])
    assert v is not None and v.holds is False
    v = target_of(by["outbox_events_per_s"])
    assert v is not None and v.holds is False and v.text == "ratio ≥ 0.8"
    v = target_of(by["http_over_runtime.tickets_issued_per_s"])
    assert v is not None and v.holds is True
    # No ratio key: value/baseline, checked against the target on the ratio.
    assert abs(ratio_of(by["recording_cpu_4_cameras"]) - 1.2) < 1e-9
    assert target_of(by["recording_cpu_4_cameras"]).holds is False
    # A figure without a value cannot be said to hold.
    assert target_of(by["export_5min_clip"]).holds is None
    # A figure that is a ratio gets no value/baseline ratio of its own.
    assert ratio_of(by["http_over_runtime.tickets_issued_per_s"]) is None


def test_report_rows_header_errors_and_counts() -> None:
    lines, other = parse_lines(sample_text())
    assert other == ["Traceback oops"]
    md = render(lines, other)
    assert "abc123def456" in md and "Sample CPU" in md and "1.50 1.20 0.90" in md
    assert "shared" in md
    assert row_of(md, "call_to_led_50_windows_p99")[:7] == [
        "call_to_led_50_windows_p99", "23.1", "ms", "8.2", "2.817", "≤ 30 ms", "yes"]
    assert row_of(md, "call_to_led_250_windows_p99")[6] == "**no**"
    assert row_of(md, "outbox_events_per_s")[4:7] == ["0.5", "ratio ≥ 0.8", "**no**"]
    http = row_of(md, "http.tickets_issued_per_s")
    assert http[3] == "9,600" and "baseline: domain.tickets_issued_per_s" in http[7]
    assert "p50_ms=5.2" in http[7]
    assert row_of(md, "export_5min_clip")[6] == "—"
    # Two hold (50-window p99, http/runtime), three do not, one cannot be checked.
    assert "Targets: 2 of 6 hold, 3 do not, 1 could not be checked." in md
    assert "devices=keypads \\| boards" in md  # a detail cannot break the table
    assert "- `call_to_led_50_windows_p99`: 50 windows at once" in md
    assert "- link / ingest_pg: skipped: no PostgreSQL" in md
    assert "- backup: error: RuntimeError: disk full" in md
    assert "not a JSON line: `Traceback oops`" in md
    assert "| backup | 12.5 | 1 |" in md
    # Grouped by bench, in the order the benches ran.
    heads = [ln for ln in md.splitlines() if ln.startswith("### ")]
    assert heads[:4] == ["### devices", "### link", "### queue", "### video"]


def test_scaling_table_rows_by_columns_in_order() -> None:
    lines, _ = parse_lines(sample_text())
    md = render(lines)
    part = md[md.index("### call → board latency by hall size"):]
    table = [ln for ln in part.splitlines()[2:] if ln.startswith("|")]
    assert table[0] == ("|  | p99 ms | p99 ms: baseline | p99 ms: ratio | p99 ms: target |")
    # Rows in the order they first appeared (250 printed before 10 here).
    assert table[2].startswith("| 250 windows | 66 | 9 | 7.333 | ≤ 30 ms **no** |")
    assert table[3].startswith("| 10 windows | 4.5 | 3 | 1.5 |")
    assert "### recording CPU by cameras" in md


def test_rendering_a_kept_run_from_the_command_line(tmp_path) -> None:
    src = tmp_path / "run.jsonl"
    src.write_text(sample_text(), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "bench.report", str(src)], cwd=ROOT, check=True,
                   capture_output=True)
    md = (tmp_path / "run.md").read_text(encoding="utf-8")
    assert md.startswith("# hallbox benchmark report")
    assert "## Scaling tables" in md and "## Errors and skips" in md
