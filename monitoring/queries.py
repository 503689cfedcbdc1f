"""Read helpers other pages use (the nav badge, the dashboard)."""

from __future__ import annotations

from django.db.models import QuerySet

from governance.access import restrict

from .models import Incident
from .models.incidents import OPEN_STATES


def open_incidents(user) -> QuerySet[Incident]:
    """The open incidents ``user`` can see."""
    return restrict(Incident.objects.filter(state__in=OPEN_STATES), user)
