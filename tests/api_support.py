"""Helpers for the API tests: clients authenticated with real tokens, and row counts."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.utils import timezone
from rest_framework.test import APIClient

from approvals.models import ChangeRequest, Review
from governance.models import ApiToken, AuditEvent
from governance.tokens import TOKEN_PREFIX, hash_token
from jobs.models import Job, Run


def client_for(user) -> APIClient:
    """An API client sending ``Authorization: Token ...`` for ``user`` (None: anonymous)."""
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


def token_for(user) -> str:
    """A real hashed token for ``user``, made without the audit event issue_token writes (counts stay exact)."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ApiToken.objects.create(
        user=user, key_hash=hash_token(raw), prefix=raw[:10], expires_at=timezone.now() + timedelta(days=1)
    )
    return raw


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
