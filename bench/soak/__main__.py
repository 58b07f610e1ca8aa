"""`python -m bench.soak` (make soak): see bench/soak/run.py and docs/soak.md."""

from bench.soak.run import main

raise SystemExit(main())
