"""Property-based fuzzing of the whole REST API from its own OpenAPI schema (schemathesis).

Two users fuzz every operation: an acme author and a globex author. No request may end in a
server error, and nothing the globex user receives may mention acme's data.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings

from governor.wsgi import application
from tests.api_support import token_for

EXAMPLES_PER_OPERATION = 4
# A marker unique to acme's data: it must never reach a globex user.
ACME_MARKER = "payments.ledger.reconcile"


def _schema():
    raw = SchemaGenerator().get_schema(request=None, public=True)
    schema = schemathesis.openapi.from_dict(raw)
    schema.app = application  # calls go through Django's WSGI app, no server needed
    return schema


def _fuzz(operation, headers, check):
    strategy = operation.as_strategy()

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case):
        response = case.call(headers=headers)
        check(case, response)

    run()


@pytest.fixture
def wsgi_keeps_test_connection():
    """Like Django's test client: requests must not close the test's transaction-wrapped connection."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.slow
@pytest.mark.usefixtures("wsgi_keeps_test_connection")
def test_fuzzing_every_operation_as_two_tenants_finds_no_server_error_and_no_leak(cast):
    cast.make_job(cast.dev)  # acme data the globex user must never see
    tokens = {
        "acme": token_for(cast.author),
        "globex": token_for(cast.globex_author),
    }
    failures: list[str] = []

    def checker(who):
        def check(case, response):
            label = f"{who} {case.method} {case.formatted_path}"
            if response.status_code >= 500:
                failures.append(
                    f"{label}: HTTP {response.status_code} body={case.body!r:.300} query={case.query!r:.200}"
                )
            if who == "globex" and ACME_MARKER in response.text:
                failures.append(f"{label}: acme data leaked to globex")

        return check

    operations = [result.ok() for result in _schema().get_all_operations()]
    assert len(operations) > 20, "the schema should describe the whole API"
    for operation in operations:
        if operation.path.endswith("/export/"):
            continue  # streamed exports are fuzzed by their own tests; bodies here are CSV
        for who, token in tokens.items():
            _fuzz(operation, {"Authorization": f"Token {token}"}, checker(who))
    assert not failures, "\n".join(sorted(set(failures))[:30])
