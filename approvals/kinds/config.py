"""Configuration objects (maintenance windows, holiday calendars, pools, recovery and alert rules): one
``ConfigKind`` per kind, on top of the per-kind specification in ``approvals.config_changes.KINDS``."""

from __future__ import annotations

from typing import cast

from django.contrib.auth.models import AnonymousUser, User

from .. import config_changes, policies
from ..models import ChangeRequest
from .base import Actor, Definition, FlatDiff


class ConfigKind(FlatDiff):
    """Tenant admins propose every change; authors not narrowed to a team propose the objects of an
    environment they author in (``policies.may_propose_config``), tenant-wide ones being the admins'.
    Reviewed under the strictest rule of the object's environment (or the tenant's), by approvers of
    that whole scope."""

    def __init__(self, spec: config_changes.Kind) -> None:
        self.spec = spec
        self.label = spec.label

    def proposal_refusal(self, user: Actor, change: ChangeRequest) -> str | None:
        environment = change.environment
        if policies.may_propose_config(
            cast(User, user) if user else AnonymousUser(),
            tenant_id=change.tenant_id,
            environment_id=environment.pk if environment is not None else None,
        ):
            return None
        if environment is None:
            return f"Only a tenant admin may propose changes to a tenant-wide {self.label}."
        return (
            f"You need the tenant admin role, or the author role for the whole {environment.slug} environment, "
            f"to propose {self.label} changes."
        )

    def rule(self, change: ChangeRequest) -> policies.Rule:
        return policies.rule_for_config(change.tenant_id, change.environment)

    def clean(self, change: ChangeRequest, definition: Definition) -> Definition:
        return config_changes.clean_proposal(change, definition)

    def live_version(self, change: ChangeRequest) -> Definition | None:
        return config_changes.live_definition(change)

    def check_not_stale(self, change: ChangeRequest) -> None:
        config_changes.check_not_stale(change)

    def rebase(self, change: ChangeRequest) -> list[str]:
        return config_changes.rebase(change)

    def apply(self, change: ChangeRequest, *, actor: Actor, reason: str) -> int | None:
        config_changes.apply(change, actor=actor, reason=reason)
        return None
