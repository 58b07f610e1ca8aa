"""[rating]: how satisfaction ratings (服务评价) are bound to tickets. Absent: ratings are off."""

from __future__ import annotations

from pydantic import Field

from edge.config.base import Strict


class RatingSection(Strict):
    # How long after the window asks for a rating the applicant may still give one; after
    # that the ticket ends 未评价 (never a default level).
    window_seconds: int = Field(default=120, ge=10, le=3600)
    # Ask the window's evaluator as soon as a ticket is finished (办结). When false, only the
    # staff page's explicit request (POST /api/v1/windows/{n}/rating-request) asks.
    auto_request: bool = True
    # A tablet must send a reason with 不满意 / 非常不满意; a 4-key device cannot, so its bad
    # ratings are accepted and flagged for follow-up instead.
    reason_required: bool = True
