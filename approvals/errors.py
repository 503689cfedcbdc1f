"""Change control's own errors and the input checks every kind of request shares.

Below the models and the kinds, so that everything in approvals may raise them without an import cycle.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from governance.errors import ServiceError

__all__ = ["ChangeError", "check_apply_after", "require_justification"]


class ChangeError(ServiceError):
    """A change-control rule refused the operation; nothing was changed.

    ``conflict`` marks state conflicts (HTTP 409); ``code`` names the rule for callers and tests.
    """

    def __init__(self, message: str, *, conflict: bool = False, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.conflict = conflict
        self.code = code


def check_apply_after(apply_after: datetime | None, errors: dict[str, list[str]]) -> None:
    if apply_after is not None and timezone.is_naive(apply_after):
        errors["apply_after"] = ["Give the apply time with a time zone (UTC, ISO 8601 with Z)."]


def require_justification(justification: str, errors: dict[str, list[str]], message: str = "") -> None:
    if not (justification or "").strip():
        errors["justification"] = [message or "A justification is required: say why this change is needed."]
