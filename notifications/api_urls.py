"""Notifications API routes (under /api/v1/, assembled by governor/api_urls.py)."""

from rest_framework.routers import SimpleRouter

from .api import ChannelViewSet, NotificationViewSet

router = SimpleRouter()
router.register("notification-channels", ChannelViewSet, basename="api-notification-channel")
router.register("notifications", NotificationViewSet, basename="api-notification")

urlpatterns: list = []
