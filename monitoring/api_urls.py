"""Monitoring API (/api/v1/incidents/, /api/v1/alert-rules/, ...)."""

from rest_framework.routers import DefaultRouter

from .recovery_api import RecoveryActionViewSet, RecoveryRuleViewSet

router = DefaultRouter()
router.register("recovery-rules", RecoveryRuleViewSet, basename="api-recovery-rule")
router.register("recovery-actions", RecoveryActionViewSet, basename="api-recovery-action")
urlpatterns: list = []
