"""What the dashboard shows of change control for its signed-in user (a context helper and the
fragment ``approvals/snippets/recently_decided.html``; the dashboard page composes them)."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from .models import ChangeRequest, ChangeStatus, Review, ReviewDecision

RECENT_DAYS = 14
RECENT_LIMIT = 6


def recently_decided(user, *, now=None, limit: int = RECENT_LIMIT) -> list[ChangeRequest]:
    """The user's own requests decided in the last ``RECENT_DAYS`` days (applied, rejected, failed,
    expired, approved and waiting; not withdrawn), newest first; a rejected one carries ``rejected_by`` (the
    reviewer) for its reason. Two queries whatever the number of rows."""
    now = now or timezone.now()
    rejections = Review.objects.filter(decision=ReviewDecision.REJECT).select_related("reviewer").order_by("-id")
    decided: QuerySet[ChangeRequest] = (
        ChangeRequest.objects.filter(author=user, decided_at__gte=now - timedelta(days=RECENT_DAYS))
        .exclude(status__in=[ChangeStatus.DRAFT, ChangeStatus.SUBMITTED, ChangeStatus.WITHDRAWN])
        .select_related("team", "environment", "tenant")
        .prefetch_related(Prefetch("reviews", queryset=rejections, to_attr="rejections"))
        .order_by("-decided_at", "-id")
    )
    rows = list(decided[:limit])
    for change in rows:
        rejections = change.rejections  # type: ignore[attr-defined]  # the prefetch above
        change.rejected_by = rejections[0].reviewer if rejections else None  # type: ignore[attr-defined]
    return rows
