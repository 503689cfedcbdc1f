"""Facts about the signed-in user that more than one part of a page shows, counted once per request."""

from __future__ import annotations

from django.http import HttpRequest

from approvals.services import awaiting_review


def review_queue_count(request: HttpRequest) -> int:
    """How many requests wait for the user's review: the nav badge on every page, and the dashboard's
    "Waiting for my review" panel on the same request (one query for both)."""
    cached: int | None = getattr(request, "_governor_review_count", None)
    if cached is None:
        user = getattr(request, "user", None)
        cached = awaiting_review(user).count() if user is not None and user.is_authenticated else 0
        request._governor_review_count = cached  # type: ignore[attr-defined]
    return cached
