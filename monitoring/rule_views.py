"""The alert rules page: the explicit rules of the tenants the user sees and the defaults."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from governance.access import Action, restrict, tenant_ids

from .models import AlertRule
from .rule_params import KIND_PARAMS
from .rules import DEFAULT_RULES


@login_required
def alert_rule_list(request):
    """Explicit rules (restricted like every object) and the defaults by criticality."""
    user = request.user
    rules = list(
        restrict(AlertRule.objects.select_related("tenant", "environment", "job", "team"), user).order_by(
            "tenant__slug", "name", "id"
        )
    )
    defaults = [
        {"criticality": criticality, "kind": kind, "severity": severity, "params": params}
        for criticality, rows in DEFAULT_RULES.items()
        for kind, severity, params in rows
    ]
    context = {
        "rules": rules,
        "defaults": defaults,
        "kinds": KIND_PARAMS,
        "multi_tenant": len({r.tenant_id for r in rules}) > 1,
        # The propose form itself decides who may propose where (approvals.config_views).
        "may_propose": bool(tenant_ids(user, Action.PROPOSE)),
    }
    return render(request, "monitoring/alert_rule_list.html", context)
