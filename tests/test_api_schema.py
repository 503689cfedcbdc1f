"""The OpenAPI schema generates cleanly and documents the API's key paths."""

import yaml
from django.core.management import call_command

from tests.api_support import client_for

KEY_PATHS = [
    "/api/v1/auth/token/",
    "/api/v1/jobs/",
    "/api/v1/jobs/{id}/",
    "/api/v1/jobs/{id}/trigger/",
    "/api/v1/jobs/{id}/pause/",
    "/api/v1/jobs/{id}/resume/",
    "/api/v1/jobs/{id}/history/",
    "/api/v1/runs/",
    "/api/v1/runs/{id}/cancel/",
    "/api/v1/change-requests/",
    "/api/v1/change-requests/{id}/",
    "/api/v1/change-requests/{id}/submit/",
    "/api/v1/change-requests/{id}/approve/",
    "/api/v1/change-requests/{id}/reject/",
    "/api/v1/change-requests/{id}/resubmit/",
    "/api/v1/change-requests/{id}/withdraw/",
    "/api/v1/audit-events/",
    "/api/v1/tenants/",
    "/api/v1/teams/",
    "/api/v1/environments/",
]


def test_schema_generates_without_warnings_and_has_the_key_paths(tmp_path):
    target = tmp_path / "schema.yaml"
    # --fail-on-warn turns any drf-spectacular warning (untyped field, enum clash, ...) into an error.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    schema = yaml.safe_load(target.read_text())
    assert schema["openapi"].startswith("3.")
    assert set(KEY_PATHS) <= set(schema["paths"])
    create = schema["paths"]["/api/v1/change-requests/"]["post"]
    body = schema["components"]["schemas"]["ChangeRequestCreateRequest"]
    assert {"status", "author", "tenant", "required_approvals"}.isdisjoint(body["properties"])
    assert "201" in create["responses"]
    assert not schema["paths"]["/api/v1/auth/token/"]["post"].get("security")
    # Jobs are read-only through the API: changes go through change requests.
    assert set(schema["paths"]["/api/v1/jobs/{id}/"]) == {"get"}


def test_schema_and_docs_are_served(cast):
    client = client_for(cast.viewer)
    assert client.get("/api/schema/").status_code == 200
    response = client.get("/api/docs/")
    assert response.status_code == 200 and b"swagger" in response.content.lower()


def test_jobs_have_no_write_methods(cast):
    job = cast.make_job(cast.dev)
    client = client_for(cast.admin)
    assert client.post("/api/v1/jobs/", cast.definition(), format="json").status_code == 405
    assert client.patch(f"/api/v1/jobs/{job.pk}/", {"cron": "* * * * *"}, format="json").status_code == 405
    assert client.delete(f"/api/v1/jobs/{job.pk}/").status_code == 405
    assert client.delete(f"/api/v1/runs/{job.pk}/").status_code == 405
