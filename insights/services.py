"""Insights writes: "propose stagger" opens, per job, a change request rewriting its cron with the
suggested ``H`` (by the reader, through approvals' services: the usual rights, justification,
review and audit; nothing is applied here)."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from approvals.errors import ChangeError
from approvals.models import ChangeAction, ChangeRequest
from approvals.services import propose_change
from governance.access import Action, restrict
from governance.models import Tenant
from governance.services import AccessDenied
from jobs.models import Job, JobStatus

from .herds import suggest_h

MAX_STAGGER_JOBS = 500


def propose_stagger(
    *, actor, tenant: Tenant, job_ids: list[int], justification: str = ""
) -> tuple[list[ChangeRequest], list[tuple[str, str]]]:
    """One change request per job of ``tenant`` among ``job_ids`` (that the actor may see),
    proposing its H rewrite; returns (the requests opened, [(job or id, why not)]). Each request
    is its own transaction: one refusal does not undo the others."""
    created: list[ChangeRequest] = []
    refused: list[tuple[str, str]] = []
    wanted = list(dict.fromkeys(job_ids))[:MAX_STAGGER_JOBS]
    jobs = {
        job.pk: job
        for job in restrict(Job.objects.select_related("team", "environment", "tenant"), actor, Action.VIEW).filter(
            tenant=tenant, pk__in=wanted
        )
    }
    text = (
        justification.strip() or "Stagger the start: many runs start at the same minute (Insights, thundering herds)."
    )
    for job_id in wanted:
        job = jobs.get(job_id)
        if job is None or job.status == JobStatus.DELETED:
            refused.append((f"Job {job_id}", "No such job."))
            continue
        suggested = suggest_h(job.cron)
        if suggested is None:
            refused.append((job.name, f"No H rewrite for {job.cron!r}: its minute is already hashed or a list."))
            continue
        try:
            created.append(
                propose_change(
                    actor=actor,
                    action=ChangeAction.UPDATE,
                    job=job,
                    definition={"cron": suggested},
                    justification=f"{text} {job.cron} -> {suggested}",
                )
            )
        except AccessDenied as exc:
            refused.append((job.name, str(exc)))
        except ValidationError as exc:
            refused.append((job.name, "; ".join(m for ms in exc.message_dict.values() for m in ms)))
        except ChangeError as exc:
            refused.append((job.name, str(exc)))
    return created, refused
