"""[backup]: the daily online copy of the database (journal, outbox, hall state).

Recordings are not in it: they are files of their own (see the README on keeping them).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from edge.config.base import Strict


class BackupSection(Strict):
    enabled: bool = True
    # Relative paths are under the data directory. Best on another disk or a mounted share:
    # a copy on the same disk survives a broken database, not a broken disk.
    dir: str = "backups"
    at: str = Field(default="02:30", description="local time of the daily copy, HH:MM")
    keep: int = Field(default=14, ge=1, le=3650, description="daily copies kept")

    @field_validator("at")
    @classmethod
    def _at(cls, v: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
            raise ValueError(f"expected HH:MM, got {v!r}")
        return v
