"""Run every bench/bench_*.py module's main() in turn; one JSON line per figure on stdout.

A bench that fails prints a JSON line with an "error" and the others still run; the exit code
is non-zero when any failed.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path


def main() -> int:
    failed = 0
    for path in sorted(Path(__file__).resolve().parent.glob("bench_*.py")):
        name = path.stem
        try:
            importlib.import_module(f"bench.{name}").main()
        except KeyboardInterrupt:
            raise
        except BaseException as e:  # SystemExit too: one bench must not end the others
            failed += 1
            traceback.print_exc(file=sys.stderr)
            print(json.dumps({"bench": name.removeprefix("bench_"),
                              "error": f"{type(e).__name__}: {e}"}, ensure_ascii=False),
                  flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
