"""The notifications page: channels, what failed for good, and the latest delivery attempts."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from governance.access import restrict

from .channels import display_target, may_manage
from .models import Channel, DeliveryAttempt, Notification, NotificationState

RECENT = 50


@login_required
def notification_list(request):
    user = request.user
    channels = list(restrict(Channel.objects.select_related("tenant", "team"), user).order_by("tenant__slug", "name"))
    for channel in channels:
        channel.shown_target = (
            channel.target if may_manage(user, channel.tenant_id, channel.team_id) else display_target(channel)
        )
    outbox = restrict(Notification.objects.select_related("tenant", "channel", "user"), user)
    failed = list(outbox.filter(state=NotificationState.FAILED).order_by("-failed_at", "-pk")[:RECENT])
    attempts = list(
        restrict(DeliveryAttempt.objects.select_related("notification__channel", "notification__user"), user).order_by(
            "-at", "-pk"
        )[:RECENT]
    )
    context = {
        "channels": channels,
        "failed": failed,
        "attempts": attempts,
        "pending": outbox.filter(state=NotificationState.PENDING).count(),
        "tenants": {channel.tenant_id for channel in channels},
    }
    return render(request, "notifications/notification_list.html", context)
