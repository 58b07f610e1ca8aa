"""Shared pieces of the config models."""

from __future__ import annotations

import re
from datetime import time
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

_SPAN = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class Strict(BaseModel):
    """Every config model refuses unknown keys, so a typo is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_span(text: str) -> tuple[time, time]:
    """'08:30-12:00' -> (08:30, 12:00); end must be after start."""
    m = _SPAN.match(text)
    if not m:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    start = time(h1, m1)
    end = time(23, 59, 59) if h2 == 24 else time(h2, m2)
    if end <= start:
        raise ValueError(f"span {text!r} ends before it starts")
    return start, end


def _spans(v: list[str]) -> list[str]:
    for span in v:
        parse_span(span)
    return v


def _weekdays(v: list[int]) -> list[int]:
    bad = [d for d in v if not 1 <= d <= 7]
    if bad:
        raise ValueError(f"days are ISO weekdays 1 (Monday) to 7 (Sunday), got {bad}")
    return v


# Time spans such as "08:30-12:00", and ISO weekdays 1 (Monday) to 7 (Sunday).
Spans = Annotated[list[str], AfterValidator(_spans)]
Weekdays = Annotated[list[int], AfterValidator(_weekdays)]
