"""What every kind of change request supplies to the change-control state machine.

``approvals.services`` owns the workflow (propose, submit, review, edit, rebase, withdraw, expire,
apply) and knows nothing of jobs, policies or configuration objects: it asks the request's kind
(``approvals.kinds.kind_of``) for what differs, through the ``ChangeKind`` protocol below.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias

from governance.actors import Actor

from ..models import ChangeRequest
from ..policies import Rule

Definition: TypeAlias = dict[str, Any]


class ChangeKind(Protocol):
    """One kind of target (a job's definition, a job's paused state, an approval policy, a
    maintenance window, a holiday calendar, a pool): how its requests are validated, compared with
    the live object, reviewed under which rule, and made live."""

    label: str

    def proposal_refusal(self, user: Actor, change: ChangeRequest) -> str | None:
        """Who may propose: why ``user`` may not propose ``change`` (not saved yet), None when they may."""

    def rule(self, change: ChangeRequest) -> Rule:
        """The approval rule the request is reviewed under (snapshotted at submit and on every edit)."""

    def clean(self, change: ChangeRequest, definition: Definition) -> Definition:
        """Validate an edited proposal against the live object; ValidationError({field: [...]})."""

    def on_edit(self, change: ChangeRequest) -> None:
        """The proposal was replaced by an edit: update what the request is based on, if that follows it."""

    def live_version(self, change: ChangeRequest) -> Definition | None:
        """The live state the request is compared with (None for a create, or once the object is gone)."""

    def check_not_stale(self, change: ChangeRequest) -> None:
        """ChangeError (409) when the live object changed in a way the request was not based on."""

    def diff(self, change: ChangeRequest) -> list[dict[str, Any]]:
        """[{field, before, after}] of the fields the request changes."""

    def rebase(self, change: ChangeRequest) -> list[str]:
        """Move the request onto the live object; the fields both sides changed (the author's value wins)."""

    def apply(self, change: ChangeRequest, *, actor: Actor, reason: str) -> int | None:
        """Make an approved request live (inside the caller's savepoint); the new version, if the kind has one."""

    def applies_before_review(self, change: ChangeRequest) -> bool:
        """Does the request apply at submit, before its approvals (which then come after the fact)?"""


def field_diff(change: ChangeRequest) -> list[dict[str, Any]]:
    """The diff of a request whose definition is a flat object (policy, state, configuration)."""
    from ..models import ChangeAction

    before = {} if change.action == ChangeAction.CREATE else (change.base_definition or {})
    after = {} if change.action == ChangeAction.DELETE else (change.proposed or {})
    fields = change.field_order(before, after)
    return [
        {"field": f, "before": before.get(f), "after": after.get(f)} for f in fields if before.get(f) != after.get(f)
    ]


class FlatDiff:
    """``diff`` for kinds whose definition is a flat object, and no apply before review."""

    def diff(self, change: ChangeRequest) -> list[dict[str, Any]]:
        return field_diff(change)

    def applies_before_review(self, change: ChangeRequest) -> bool:
        return False

    def on_edit(self, change: ChangeRequest) -> None:
        return None
