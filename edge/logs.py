"""The box's log: one structured line per thing worth a person's attention.

- key=value lines (or JSON with HALLBOX_LOG_FORMAT=json), to journald when systemd connected
  our stderr to it ($JOURNAL_STREAM), with a `<N>` priority prefix journald understands and no
  timestamp (journald adds its own); to stderr with a timestamp otherwise.
- A rate limit per message template: a failure loop logs a few lines, then one line saying how
  many were held back, so no loop can fill a disk.
- Secrets never reach a line: values taken from the config (passwords, keys, token and PIN
  hashes) and anything that looks like a credential (Bearer tokens, URL passwords, argon2
  hashes) are replaced by `***` after formatting, tracebacks included.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

# Field names whose string values are secrets wherever they occur in the config.
_SECRET_FIELD = re.compile(r"(password|passwd|secret|token|_key$|^key$|pin_hash|_sha256$|hmac)")
_NOT_SECRET_FIELD = re.compile(r"(_file|_path|_dir)$")
_PATTERNS = [
    # Authorization: Bearer <token>
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
    # scheme://user:password@host
    (re.compile(r"([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1***@"),
    (re.compile(r"\$argon2[a-z]*\$[^\s'\"]+"), "***"),
    # pin=..., "pin": "...", password=..., token=... in reprs and query strings
    (re.compile(r"(?i)(['\"]?(?:pin|password|token|secret)['\"]?\s*[:=]\s*['\"]?)[^\s'\",&}]+"),
     r"\1***"),
]
_MIN_SECRET = 4  # shorter values would blank out ordinary words


class Redactor:
    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            self._secrets |= {v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET}

    def __call__(self, text: str) -> str:
        # Longest first: a secret that contains another is replaced whole.
        for s in sorted(self._secrets, key=len, reverse=True):
            if s in text:
                text = text.replace(s, "***")
        for rx, repl in _PATTERNS:
            text = rx.sub(repl, text)
        return text


REDACT = Redactor()


def config_secrets(obj: Any, field: str = "") -> set[str]:
    """Every string under a secret-looking field name of a (pydantic) config, recursively."""
    out: set[str] = set()
    if isinstance(obj, SecretStr | SecretBytes):
        value = obj.get_secret_value()
        out.add(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            out |= config_secrets(getattr(obj, name), name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out |= config_secrets(v, str(k))
    elif isinstance(obj, list | tuple):
        for v in obj:
            out |= config_secrets(v, field)
    elif isinstance(obj, str) and _SECRET_FIELD.search(field.lower()) \
            and not _NOT_SECRET_FIELD.search(field.lower()):
        out.add(obj)
    elif isinstance(obj, str) and "://" in obj:
        # Passwords inside URLs (mqtt://user:pass@..., rtsp://user:pass@...).
        m = re.match(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:([^@\s/]+)@", obj)
        if m:
            out.add(m.group(1))
    return out


_LEVEL = {"DEBUG": "debug", "INFO": "info", "WARNING": "warning", "ERROR": "error",
          "CRITICAL": "critical"}
_PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}


def _kv(value: str) -> str:
    return value if re.fullmatch(r"[^\s\"=]+", value) else json.dumps(value, ensure_ascii=False)


class LineFormatter(logging.Formatter):
    """One line per record (tracebacks folded into it), redacted."""

    def __init__(self, *, journald: bool, as_json: bool) -> None:
        super().__init__()
        self.journald = journald
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, str] = {}
        if not self.journald:
            fields["ts"] = datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z")
        fields["level"] = _LEVEL.get(record.levelname, record.levelname.lower())
        fields["logger"] = record.name
        fields["msg"] = record.getMessage()
        for k, v in getattr(record, "fields", {}).items():
            fields[str(k)] = str(v)
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info).replace("\n", " | ")
        fields = {k: REDACT(v) for k, v in fields.items()}
        line = (json.dumps(fields, ensure_ascii=False) if self.as_json
                else " ".join(f"{k}={_kv(v)}" for k, v in fields.items()))
        if self.journald:
            line = f"<{_PRIORITY.get(record.levelname, 6)}>{line}"
        return line


class RateLimit(logging.Filter):
    """At most `burst` lines per message template per `window` seconds, and `total` overall.

    What is held back is counted and reported in one line when the window turns over.
    """

    def __init__(self, burst: int = 5, window: float = 60.0, total: int = 300,
                 clock: Any = time.monotonic) -> None:
        super().__init__()
        self.burst, self.window, self.total = burst, window, total
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._count: dict[tuple[str, str], int] = {}
        self._held: dict[tuple[str, str], int] = {}
        self._all = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "ratelimit_summary", False):
            return True
        key = (record.name, str(record.msg))
        with self._lock:
            now = self._clock()
            summary: list[tuple[tuple[str, str], int]] = []
            if now - self._start >= self.window:
                summary = [(k, n) for k, n in self._held.items() if n]
                self._start, self._count, self._held, self._all = now, {}, {}, 0
            n = self._count.get(key, 0) + 1
            self._count[key] = n
            ok = n <= self.burst and self._all < self.total
            if ok:
                self._all += 1
            else:
                self._held[key] = self._held.get(key, 0) + 1
        for (name, msg), held in summary:
            logging.getLogger(name).warning(
                "%d more like this held back in the last %ds: %s", held, int(self.window),
                msg[:120], extra={"ratelimit_summary": True})
        return ok


def journald_stream(stream: Any = None) -> bool:
    """True when $JOURNAL_STREAM names the file our stderr is (systemd connected it)."""
    js = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = js.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


_installed: logging.Handler | None = None


def setup(level: str | None = None, stream: Any = None) -> logging.Handler:
    """Install the box's handler on the root logger (again: replaces the previous one)."""
    global _installed
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter(
        journald=journald_stream(stream),
        as_json=os.environ.get("HALLBOX_LOG_FORMAT", "").lower() == "json"))
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level or os.environ.get("HALLBOX_LOG", "INFO"))
    # Libraries that log every request at INFO: routine, not worth a person's attention.
    for noisy in ("httpx", "httpcore", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _installed = handler
    return handler
