"""Monitoring API (/api/v1/incidents/, /api/v1/alert-rules/, ...)."""

from rest_framework.routers import DefaultRouter

from .api import IncidentViewSet
from .oncall_api import EscalationPolicyViewSet, OverrideViewSet, RotationViewSet, RouteViewSet, SilenceViewSet
from .recovery_api import RecoveryActionViewSet, RecoveryRuleViewSet
from .rule_api import AlertRuleViewSet

router = DefaultRouter()
router.register("incidents", IncidentViewSet, basename="api-incident")
router.register("rotations", RotationViewSet, basename="api-rotation")
router.register("rotation-overrides", OverrideViewSet, basename="api-rotation-override")
router.register("escalation-policies", EscalationPolicyViewSet, basename="api-escalation-policy")
router.register("escalation-routes", RouteViewSet, basename="api-escalation-route")
router.register("silences", SilenceViewSet, basename="api-silence")
router.register("alert-rules", AlertRuleViewSet, basename="api-alert-rule")
router.register("recovery-rules", RecoveryRuleViewSet, basename="api-recovery-rule")
router.register("recovery-actions", RecoveryActionViewSet, basename="api-recovery-action")
urlpatterns: list = []
