"""Alert rules (``monitoring.models.AlertRule``) as a kind of change request.

A rule is a configuration object like a pool: its spec (validation, live definition, apply, delete)
is in ``approvals.config_changes.KINDS``. Who may propose follows the place of the rule: a tenant
admin anywhere; an author not narrowed to a team for rules of an environment they author in
(a job rule lives in its job's environment). Reviewed by approvers of that whole scope, never the author.
"""

from __future__ import annotations

from ..config_changes import KINDS as CONFIG_SPECS
from ..models import TargetKind
from .config import ConfigKind

ALERT_RULE = ConfigKind(CONFIG_SPECS[TargetKind.ALERT_RULE])
