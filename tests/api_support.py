"""Helpers for the API tests: clients authenticated with real tokens, and row counts."""

from __future__ import annotations

from rest_framework.test import APIClient

from approvals.models import ChangeRequest, Review
from governance.models import AuditEvent
from governance.tokens import issue_token
from jobs.models import Job, Run


def client_for(user) -> APIClient:
    """An API client sending ``Authorization: Token ...`` for ``user`` (None: anonymous)."""
    client = APIClient()
    if user is not None:
        _, raw = issue_token(user, actor=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    return client


def counts() -> dict[str, int]:
    """Rows of everything a request could write, to prove a refused request wrote nothing."""
    return {
        "change_requests": ChangeRequest.objects.count(),
        "reviews": Review.objects.count(),
        "jobs": Job.objects.count(),
        "runs": Run.objects.count(),
        "audit_events": AuditEvent.objects.count(),
    }


def propose_body(cast, **overrides) -> dict:
    """A valid request body proposing a new payments job in acme prod."""
    body = {
        "action": "create",
        "team": cast.payments.pk,
        "environment": cast.prod.pk,
        "definition": cast.definition(),
        "justification": "Nightly ledger reconciliation for the auditors.",
        "ticket": "OPS-123",
    }
    body.update(overrides)
    return body
