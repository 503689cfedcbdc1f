"""What change control adds to the job page (registered in ``jobs.hooks`` by ``ApprovalsConfig.ready``):
the request behind each version and who approved it, the job's open requests, the promotion target."""

from __future__ import annotations

from django.db.models import Prefetch

from governance.access import Action, can_in
from governance.models import Environment
from jobs.models import Job, JobStatus

from .models import OPEN_STATUSES, ChangeRequest, Review
from .services import next_environment


def add_change_control(user, job: Job, context: dict) -> None:
    versions = context["versions"]
    ids = [v["change_request_id"] for v in versions if v["change_request_id"]]
    requests = {
        cr.pk: cr
        for cr in ChangeRequest.objects.filter(pk__in=ids)
        .select_related("author")
        .prefetch_related(Prefetch("reviews", queryset=Review.objects.select_related("reviewer")))
    }
    for v in versions:
        cr = requests.get(v["change_request_id"])
        v["change_request"] = cr
        if cr is not None:
            v["approvers"] = [r.reviewer for r in cr.reviews.all() if r.decision == "approve"]
    context["open_changes"] = list(
        job.change_requests.filter(status__in=OPEN_STATUSES).select_related("author").order_by("-created_at")
    )
    context["promote_to"] = promotion_target(user, job)


def promotion_target(user, job: Job) -> Environment | None:
    """The next environment, when the user may propose this job there."""
    if job.status == JobStatus.DELETED:
        return None
    target = next_environment(job.environment)
    if target is None or not can_in(user, Action.PROPOSE, job.tenant_id, job.team_id, target.pk):
        return None
    return target
