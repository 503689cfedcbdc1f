"""Template tags of the change-control pages."""

from __future__ import annotations

from django import template
from django.utils import timezone

from governance.access import restrict

from ..models import FreezeWindow

register = template.Library()


@register.simple_tag(takes_context=True)
def active_freezes(context) -> list[FreezeWindow]:
    """Freezes in force now that the signed-in user can see (one query), for the banner on change pages."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return []
    now = timezone.now()
    return list(
        restrict(FreezeWindow.objects.filter(starts_at__lte=now, ends_at__gt=now), user)
        .select_related("tenant", "environment")
        .order_by("ends_at")
    )


@register.filter
def shown(text, field: str = "") -> str:
    """A diff value in words: empty, ``{}`` and ``[]`` read "none"; max active runs 0 is "no limit"."""
    from ..review_view import shown as in_words

    return in_words(field, None if text is None else str(text))
