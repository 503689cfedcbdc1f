"""REST API routes of change control (under /api/v1/, assembled by governor/api_urls.py)."""

from rest_framework.routers import SimpleRouter

from .api import ChangeRequestViewSet

router = SimpleRouter()
router.register("change-requests", ChangeRequestViewSet, basename="api-change-request")

urlpatterns: list = []
