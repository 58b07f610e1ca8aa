"""Domain refusals. Each says what is wrong and where, and the state is left unchanged."""

from __future__ import annotations

from typing import Literal

Kind = Literal["invalid", "not_found", "conflict", "forbidden", "closed"]


class DomainError(Exception):
    def __init__(self, kind: Kind, code: str, detail: str, pointer: str | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.code = code  # short machine name, e.g. "window-not-logged-in"
        self.detail = detail
        self.pointer = pointer  # where in the request, e.g. "/body/service"
