"""Run every bench/bench_*.py and write the report: `python -m bench [NAME ...]`.

Each bench runs as its own `python -m bench.bench_NAME` process: one bench's threads, memory
and open files cannot leak into the next one's figures (the memory and video benches read
their own process's RSS). Its JSON lines are printed on stdout as they come, and kept, with a
first line describing the run and one line per bench with its wall time and exit code, in
bench/report.jsonl; bench/report.md is rendered from exactly those lines (bench/report.py).

A bench that fails or exits non-zero adds an "error" line and the others still run; the exit
code is non-zero when any failed. NAME (e.g. `video`) runs only those benches.
HALLBOX_BENCH_TIMEOUT (seconds, default 1800) stops a bench that hangs.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import parse_lines, render

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TIMEOUT_S = float(os.environ.get("HALLBOX_BENCH_TIMEOUT", "1800"))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory() -> str:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            kib = int(f.readline().split()[1])
        return f"{kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        return "RAM unknown"


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def run_line(names: list[str]) -> dict[str, Any]:
    load = os.getloadavg()
    return {"run": {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(), "cpu": cpu_model(), "memory": memory(),
        "load": " ".join(f"{x:.2f}" for x in load), "commit": commit(),
        "python": platform.python_version(),
        "command": f"python -m bench {' '.join(names)}" if names else "make bench"}}


def says_error(raw: str) -> bool:
    try:
        obj = json.loads(raw)
    except ValueError:
        return False
    return isinstance(obj, dict) and "error" in obj


def run_bench(name: str, emit: Any) -> bool:
    """One bench in its own process; its stdout lines go to `emit`, stderr passes through."""
    t0 = time.monotonic()
    # Its own process group: a bench stopped on timeout or Ctrl-C takes its brokers, boxes and
    # ffmpegs with it.
    proc = subprocess.Popen([sys.executable, "-m", f"bench.bench_{name}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            bufsize=1, start_new_session=True)

    def stop(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    tail: deque[str] = deque(maxlen=20)

    def relay_stderr() -> None:
        assert proc.stderr
        for raw in proc.stderr:
            sys.stderr.write(raw)
            sys.stderr.flush()
            tail.append(raw.rstrip())

    relay = threading.Thread(target=relay_stderr, daemon=True)
    relay.start()
    timer = threading.Timer(TIMEOUT_S, stop, (signal.SIGKILL,))
    timer.start()
    said_error = False
    try:
        assert proc.stdout
        for raw in proc.stdout:
            emit(raw.rstrip("\n"))
            said_error = said_error or says_error(raw)
        rc = proc.wait()
    except KeyboardInterrupt:
        stop(signal.SIGTERM)
        raise
    finally:
        timer.cancel()
        relay.join(5)
    elapsed = time.monotonic() - t0
    if rc != 0 and not said_error:
        last = next((ln for ln in reversed(tail) if ln.strip()), "")
        why = "killed after the bench timeout" if elapsed >= TIMEOUT_S else f"exit {rc}"
        emit(json.dumps({"bench": name, "error": f"{why}: {last}"}, ensure_ascii=False))
    emit(json.dumps({"bench": name, "elapsed_s": round(elapsed, 1), "exit": rc}))
    return rc == 0


def main(argv: list[str]) -> int:
    names = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    if argv:
        unknown = [a for a in argv if a not in names]
        if unknown:
            print(f"no such bench: {' '.join(unknown)} (have: {' '.join(names)})",
                  file=sys.stderr)
            return 2
        names = argv
    t0 = time.monotonic()
    kept: list[str] = [json.dumps(run_line(argv), ensure_ascii=False)]

    def emit(line: str) -> None:
        print(line, flush=True)
        kept.append(line)

    failed = 0
    for name in names:
        try:
            failed += not run_bench(name, emit)
        except OSError as e:  # the interpreter could not even start
            failed += 1
            emit(json.dumps({"bench": name, "error": f"{type(e).__name__}: {e}"}))
    first = json.loads(kept[0])
    first["run"]["elapsed_s"] = round(time.monotonic() - t0, 1)
    kept[0] = json.dumps(first, ensure_ascii=False)
    (HERE / "report.jsonl").write_text("\n".join(kept) + "\n", encoding="utf-8")
    lines, other = parse_lines("\n".join(kept))
    (HERE / "report.md").write_text(render(lines, other), encoding="utf-8")
    print(f"report: {HERE / 'report.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
