"""Domain refusals. Each says what is wrong and about what, and the state is left unchanged.

The domain knows nothing of HTTP: `subject` names the thing at fault in the hall's terms
("window", "service", "ticket", "appointment", "staff", ...). The API maps it to a JSON pointer
into the request (edge.api.problems).
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["invalid", "not_found", "conflict", "forbidden", "closed"]


class DomainError(Exception):
    def __init__(self, kind: Kind, code: str, detail: str, subject: str | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.code = code  # short machine name, e.g. "window-not-logged-in"
        self.detail = detail
        self.subject = subject  # what the refusal is about, e.g. "service"
