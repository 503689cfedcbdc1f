"""The base of the domain's own "you can't do that now" errors.

``approvals.ChangeError`` and ``jobs.JobStateError`` derive from it, so the API
(``governance.api.exception_handler``) and the UI (``governance.ui_errors``) map them in one place
without importing the apps above governance.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A service refused an operation for the state of things; nothing was changed.

    ``conflict``: a state conflict (HTTP 409) rather than a bad request (400).
    """

    conflict: bool = False

    @property
    def reason(self) -> str:
        return str(getattr(self, "message", None) or self)
