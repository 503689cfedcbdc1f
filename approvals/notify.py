"""Who hears of a change request: its reviewers when it waits for them, its author when it is decided.

Called inside the service's transaction (``notifications.outbox.enqueue``), so a message exists only
for a step that committed. Dedupe keys name the step and the revision (and the submission instant):
a request submitted again after a rejection or an edit notifies again, a repeated call for the same
step does not.
"""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse

from governance.actors import Actor
from notifications.outbox import enqueue

from . import policies
from .models import ChangeRequest, ChangeStatus


def _link(change: ChangeRequest) -> str:
    return settings.GOVERNOR_PUBLIC_URL + reverse("change_detail", args=[change.pk])


def _payload(change: ChangeRequest, event: str) -> dict:
    return {
        "event": event,
        "change_request": change.pk,
        "revision": change.revision,
        "status": change.status,
        "title": str(change),
        "url": _link(change),
    }


def waiting_for_review(change: ChangeRequest) -> None:
    """Tell everyone who may approve the request, at this revision, that it waits for them."""
    if change.status != ChangeStatus.SUBMITTED or change.submitted_at is None:
        return
    who = [user for user in policies.reviewers(change) if user.pk != change.author_id]
    author = change.author.get_username()
    enqueue(
        tenant_id=change.tenant_id,
        subject=f"[Governor] {change} waits for your review",
        body=(
            f"{author} asks for your review of {change} (revision {change.revision}).\n"
            f"Justification: {change.justification}\n\n"
            f"Review it: {_link(change)}\n"
        ),
        dedupe_key=f"change:{change.pk}:review:r{change.revision}:{change.submitted_at.timestamp():.6f}",
        users=who,
        payload=_payload(change, "change.waiting_for_review"),
        source=f"change:{change.pk}",
    )


DECIDED = {
    ChangeStatus.APPROVED: "approved",
    ChangeStatus.REJECTED: "rejected",
    ChangeStatus.APPLIED: "applied",
    ChangeStatus.FAILED: "failed to apply",
}


def decided(change: ChangeRequest, *, actor: Actor) -> None:
    """Tell the author that their request was approved, rejected, applied or failed to apply (not when
    they did it themselves, e.g. a change that needed no approval)."""
    verb = DECIDED.get(ChangeStatus(change.status))
    if verb is None or getattr(actor, "pk", None) == change.author_id:
        return
    lines = [f"Your change request {change} (revision {change.revision}) was {verb}."]
    if change.status == ChangeStatus.REJECTED and change.rejection_reason:
        lines.append(f"Reason: {change.rejection_reason}")
    if change.status == ChangeStatus.FAILED and change.failure_reason:
        lines.append(f"Why: {change.failure_reason}")
    lines.append(f"\nSee it: {_link(change)}")
    enqueue(
        tenant_id=change.tenant_id,
        subject=f"[Governor] {change} was {verb}",
        body="\n".join(lines) + "\n",
        dedupe_key=f"change:{change.pk}:{change.status}:r{change.revision}",
        users=[change.author],
        payload=_payload(change, f"change.{change.status}"),
        source=f"change:{change.pk}",
    )
