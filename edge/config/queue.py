"""[queue]: the calling policy knobs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edge.config.base import Strict


class QueuePolicy(Strict):
    # After this many priority calls in a row at a window, a waiting normal ticket goes next.
    priority_streak_cap: int = Field(default=3, ge=1, le=50)
    recall_cap: int = Field(default=3, ge=0, le=20)
    no_show_reactivate_minutes: int = Field(default=30, ge=0, le=24 * 60)
    transfer_mode: Literal["keep_arrival", "front"] = "keep_arrival"
    appointment_early_minutes: int = Field(default=30, ge=0, le=24 * 60)
    appointment_late_minutes: int = Field(default=15, ge=0, le=24 * 60)
    appointment_late_policy: Literal["normal", "refuse"] = "normal"
    # An appointment ticket counts as due this many minutes before its slot starts.
    appointment_due_lead_minutes: int = Field(default=5, ge=0, le=240)
    recent_service_samples: int = Field(default=20, ge=1, le=1000)
