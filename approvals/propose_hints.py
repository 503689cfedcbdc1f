"""What the propose form tells its author while they type: is the job, as typed so far, non-standard?

The next runs come from the schedule preview API (``jobs.preview_api``); this answers the other
question the form asks as soon as the cron is typed, with the same checks the proposal will meet
(``jobs.lifecycle.nonstandard_reasons``), so the hint and the later field error never disagree.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.views.decorators.http import require_GET

from governance.access import Action, restrict
from governance.models import Environment
from jobs import schedule
from jobs.lifecycle import nonstandard_reasons
from jobs.models import Job


def _whole(raw: str) -> int | None:
    raw = (raw or "").strip()
    return int(raw) if raw.isdigit() else None


@login_required
@require_GET
def proposal_hints(request):
    """``GET /changes/hints/?cron=&timezone=&criticality=&timeout_seconds=[&job=][&environment=&name=]``
    answers ``{"nonstandard": [reason, ...]}``. ``job``: a job you may propose changes to, whose
    other fields fill in; ``environment`` and ``name`` seed ``H`` as the job will."""
    params = request.GET
    definition: dict = {"heartbeat": {}}
    seed = None
    job_id = _whole(params.get("job", ""))
    if job_id is not None:
        job = restrict(Job.objects.all(), request.user, Action.PROPOSE).filter(pk=job_id).first()
        if job is not None:
            definition = job.definition()
            seed = job.schedule_seed
    for field in ("cron", "timezone", "criticality"):
        if params.get(field, "").strip():
            definition[field] = params[field].strip()
    if "timeout_seconds" in params:
        definition["timeout_seconds"] = _whole(params["timeout_seconds"]) or 0
    environment_id = _whole(params.get("environment", ""))
    if seed is None and environment_id is not None:
        environment = restrict(Environment.objects.all(), request.user, Action.PROPOSE).filter(pk=environment_id)
        tenant_id = environment.values_list("tenant_id", flat=True).first()
        if tenant_id is not None:
            seed = schedule.job_seed(tenant_id, environment_id, params.get("name", "").strip())
    return JsonResponse({"nonstandard": nonstandard_reasons(definition, seed=seed)})
