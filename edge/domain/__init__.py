"""Hall domain rules: plain code, injected clock, no I/O."""
