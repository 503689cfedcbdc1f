"""Monitoring API (/api/v1/incidents/, /api/v1/alert-rules/, ...)."""

from rest_framework.routers import DefaultRouter

from .rule_api import AlertRuleViewSet

router = DefaultRouter()
router.register("alert-rules", AlertRuleViewSet, basename="api-alert-rule")
urlpatterns: list = []
