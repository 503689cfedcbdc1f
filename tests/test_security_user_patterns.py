"""Attacks with user-supplied regular expressions (issue 13, hole 11): every pattern a user writes
(JSON Schema ``pattern``/``patternProperties``/``format: regex``, a tenant's naming pattern) is
matched by RE2 in linear time, or refused with a 400 naming the field when RE2 cannot compile it."""

from __future__ import annotations

import json
import time

import pytest
from django.core.exceptions import ValidationError

from approvals.models import ChangeRequest
from governance.patterns import UserSchemaValidator, compile_user_pattern, schema_problems
from jobs.models import Job
from manifests.loader import read_text
from manifests.plan import make_plan
from tests.api_support import client_for

EVIL = r"^(a+)+$"
# 30 characters: Python's backtracking ``re`` needs minutes for this (2.3 s at 26, ×4 per two more).
EVIL_INPUT = "a" * 29 + "!"

MANIFEST = """\
apiVersion: governor/v1
kind: Jobs
tenant: acme
team: payments
jobs:
  - name: payments.ledger.reconcile
    environments: [dev]
    description: Reconcile the ledger.
    command: [/bin/echo, "{{region}}"]
    cron: "*/5 * * * *"
    timezone: Europe/Berlin
    timeout_seconds: 60
    parameters:
      schema:
        type: object
        properties:
          region: {{type: string, pattern: {pattern}}}
      values:
        dev: {{region: {value}}}
"""


def plan_body(pattern: str, value: str) -> dict:
    content = MANIFEST.format(pattern=json.dumps(pattern), value=json.dumps(value))
    return {"files": [{"path": "payments.yaml", "content": content}]}


def test_a_catastrophic_pattern_sent_to_plan_by_a_viewer_answers_at_once(cast):
    started = time.perf_counter()
    response = client_for(cast.viewer).post("/api/v1/manifests/plan/", plan_body(EVIL, EVIL_INPUT), format="json")
    elapsed = time.perf_counter() - started
    # Matched (in linear time): the value is reported as not matching, naming the field.
    assert response.status_code == 400, response.content
    messages = [e["message"] for e in response.json()["errors"]]
    assert any("parameters" in m and "does not match" in m for m in messages), messages
    print(f"plan with {EVIL!r} against {len(EVIL_INPUT)} characters answered in {elapsed:.3f} s")


def test_the_schema_validator_matches_a_catastrophic_pattern_in_linear_time():
    validator = UserSchemaValidator({"type": "string", "pattern": EVIL})
    # 100 000 characters would never finish with ``re``; with RE2 it is a scan.
    assert not validator.is_valid("a" * 100_000 + "!")
    assert validator.is_valid("a" * 100_000)
    props = UserSchemaValidator({"type": "object", "patternProperties": {EVIL: {"type": "integer"}}})
    assert not props.is_valid({"a" * 30: "not an integer"}) and props.is_valid({EVIL_INPUT: "ignored"})
    closed = UserSchemaValidator({"type": "object", "patternProperties": {EVIL: {}}, "additionalProperties": False})
    assert not closed.is_valid({EVIL_INPUT: 1}) and closed.is_valid({"aaa": 1})


def test_a_backreference_in_a_parameter_schema_is_refused_naming_the_field(cast):
    definition = cast.definition(
        command=["/bin/echo", "{region}"],
        parameters={
            "schema": {"type": "object", "properties": {"region": {"type": "string", "pattern": r"^(a)\1$"}}},
            "values": {"dev": {"region": "aa"}},
        },
    )
    response = client_for(cast.author).post(
        "/api/v1/change-requests/",
        {
            "action": "create",
            "team": cast.payments.pk,
            "environment": cast.dev.pk,
            "definition": definition,
            "justification": "x",
        },
        format="json",
    )
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["parameters"])
    assert "properties/region/pattern" in message and "RE2" in message, message
    assert not ChangeRequest.objects.exists() and not Job.objects.exists()


@pytest.mark.parametrize(
    "schema, where",
    [
        ({"type": "object", "properties": {"x": {"type": "string", "pattern": "(?=a)a"}}}, "properties/x/pattern"),
        ({"type": "object", "patternProperties": {r"(\w)\1": {}}}, "patternProperties"),
        ({"type": "object", "properties": {"x": {"type": "string", "format": "regex", "default": r"(a)\1"}}}, None),
    ],
)
def test_lookaround_and_backreferences_are_refused_wherever_a_schema_has_a_pattern(schema, where):
    problems = schema_problems(schema)
    if where is None:
        assert problems == []  # A value of format regex is checked when validating, below.
        validator = UserSchemaValidator(
            {"type": "string", "format": "regex"}, format_checker=UserSchemaValidator.FORMAT_CHECKER
        )
        assert not validator.is_valid(r"(a)\1") and validator.is_valid("^a+$")
    else:
        assert len(problems) == 1 and problems[0].startswith(f"{where}: Only linear-time (RE2)"), problems


def test_a_plan_with_a_backreference_answers_400_naming_the_field(cast):
    response = client_for(cast.viewer).post("/api/v1/manifests/plan/", plan_body(r"^(a)\1$", "aa"), format="json")
    assert response.status_code == 400, response.content
    messages = [e["message"] for e in response.json()["errors"]]
    assert any("parameters" in m and "properties/region/pattern" in m and "RE2" in m for m in messages), messages


def _propose(cast, name):
    return cast.propose_job(environment=cast.dev, definition=cast.definition(name=name), justification="x")


def test_a_tenant_naming_pattern_must_be_re2(cast):
    cast.acme.naming_pattern = r"^(?P<team>[a-z]+)\.(?=x).*$"
    with pytest.raises(ValidationError) as info:
        cast.acme.full_clean()
    assert "RE2" in " ".join(info.value.message_dict["naming_pattern"])


def test_a_catastrophic_naming_pattern_is_matched_in_linear_time(cast):
    cast.acme.naming_pattern = r"^(?P<team>(a+)+)\.x\.y$"
    cast.acme.save()
    with pytest.raises(ValidationError) as info:
        _propose(cast, EVIL_INPUT + ".x.y")
    assert "naming convention" in " ".join(info.value.message_dict["name"])


def test_a_naming_pattern_stored_before_re2_was_required_is_refused_not_run(cast):
    cast.acme.naming_pattern = r"^(?P<team>payments)\.(\w+)\.\2$"
    cast.acme.save()  # As an old row would be: save() does not run validators.
    with pytest.raises(ValidationError) as info:
        _propose(cast, "payments.a.a")
    assert "naming pattern is refused" in " ".join(info.value.message_dict["name"])
    assert not ChangeRequest.objects.exists()


def test_a_tenant_manifest_with_a_lookahead_naming_pattern_is_refused(cast):
    text = "apiVersion: governor/v1\nkind: Tenant\ntenant: acme\nnaming_pattern: '^(?!x).*$'\nteams: [payments]\nenvironments: [dev]\n"
    plan = make_plan(read_text(text, "tenant.yaml"), actor=cast.viewer)
    assert any("naming_pattern" in str(p) and "RE2" in str(p) for p in plan.problems), [str(p) for p in plan.problems]


def test_user_patterns_are_compiled_once_and_bounded():
    assert compile_user_pattern("^a+$") is compile_user_pattern("^a+$")
    with pytest.raises(ValueError, match="at most 1000 characters"):
        compile_user_pattern("a" * 1001)
    with pytest.raises(ValueError, match="RE2"):
        compile_user_pattern("a{1000}{1000}{1000}")


# --- bounded manifest requests (plan, apply, CLI) ---------------------------------------------

JOB = """\
  - name: payments.bulk.job-{n}
    environments: [dev, prod]
    command: [/bin/true]
    cron: "0 3 * * *"
    timeout_seconds: 60
"""


def many_jobs(count: int) -> str:
    head = "apiVersion: governor/v1\nkind: Jobs\ntenant: acme\nteam: payments\njobs:\n"
    return head + "".join(JOB.format(n=n) for n in range(count))


@pytest.mark.parametrize("endpoint", ["plan", "apply"])
def test_a_manifest_body_over_the_limit_is_refused_413_naming_it(cast, settings, endpoint):
    from tests.api_support import counts

    settings.GOVERNOR_MANIFEST_MAX_BYTES = 10_000
    before = counts()
    client = client_for(cast.author)
    text = many_jobs(100)
    as_json = client.post(
        f"/api/v1/manifests/{endpoint}/", {"files": [{"path": "a.yaml", "content": text}]}, format="json"
    )
    as_yaml = client.generic("POST", f"/api/v1/manifests/{endpoint}/", text, content_type="application/yaml")
    for response in (as_json, as_yaml):
        assert response.status_code == 413, response.content
        assert "GOVERNOR_MANIFEST_MAX_BYTES" in response.json()["detail"] and "10000" in response.json()["detail"]
    assert counts() == before


def test_a_manifest_body_without_content_length_stops_at_the_limit(cast, settings):
    from rest_framework.test import APIRequestFactory

    from manifests.api import ManifestTooLarge, YAMLTextParser

    settings.GOVERNOR_MANIFEST_MAX_BYTES = 1000
    request = APIRequestFactory().post("/", "x" * 5000, content_type="application/yaml")
    with pytest.raises(ManifestTooLarge):
        YAMLTextParser().parse(request)
    assert request.read(10) == b"x" * 10  # Stopped reading one byte past the limit.


@pytest.mark.parametrize("endpoint", ["plan", "apply"])
def test_too_many_jobs_in_one_request_are_refused_400_naming_the_limit(cast, settings, endpoint):
    from tests.api_support import counts

    settings.GOVERNOR_MANIFEST_MAX_JOBS = 10
    before = counts()
    response = client_for(cast.author).post(
        f"/api/v1/manifests/{endpoint}/", {"files": [{"path": "a.yaml", "content": many_jobs(6)}]}, format="json"
    )
    assert response.status_code == 400, response.content
    [error] = response.json()["errors"]
    assert (
        "12 jobs" in error["message"]
        and "at most 10" in error["message"]
        and "GOVERNOR_MANIFEST_MAX_JOBS" in error["message"]
    )
    assert response.json()["changes"] == [] and counts() == before


def test_the_manifest_cli_refuses_files_over_the_limits(cast, settings, tmp_path):
    import io

    from django.core.management import call_command

    path = tmp_path / "payments.yaml"
    path.write_text(many_jobs(6))
    settings.GOVERNOR_MANIFEST_MAX_JOBS = 10
    for command in ("plan", "validate_manifests"):
        out = io.StringIO()
        with pytest.raises(SystemExit) as exit_info:
            call_command(command, str(path), stdout=out)
        assert exit_info.value.code == 1 and "GOVERNOR_MANIFEST_MAX_JOBS" in out.getvalue(), out.getvalue()
    settings.GOVERNOR_MANIFEST_MAX_JOBS = 2000
    settings.GOVERNOR_MANIFEST_MAX_BYTES = 100
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("apply", str(path), "--actor", cast.author.username, stdout=out)
    assert "GOVERNOR_MANIFEST_MAX_BYTES" in out.getvalue() and not Job.objects.exists()


@pytest.mark.parametrize(
    "ref, message",
    [("https://example.invalid/x.json", "only references inside the schema"), ("#/$defs/missing", "points nowhere")],
)
def test_a_schema_reference_that_cannot_resolve_is_refused_not_left_to_fail_at_run_time(ref, message):
    schema = {"type": "object", "properties": {"x": {"type": "string", "allOf": [{"$ref": ref}]}}}
    problems = schema_problems(schema)
    assert len(problems) == 1 and message in problems[0], problems
    assert schema_problems({"$defs": {"a": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/a"}}}) == []


def test_a_runbook_built_to_make_the_markdown_patterns_backtrack_renders_at_once():
    from governor.templatetags.governor import runbook

    started = time.perf_counter()
    html = runbook("[" * 50_000 + "\n\n**" + "a" * 50_000)
    elapsed = time.perf_counter() - started
    assert html.startswith("<p>[[[") and "<a " not in html
    assert elapsed < 2, f"{elapsed:.1f} s (Python's re took 30 s on this runbook)"
    assert str(runbook("see [docs](https://x.example/y) and `code` **now**")) == (
        '<p>see <a href="https://x.example/y" rel="noopener noreferrer nofollow">docs</a> and <code>code</code> '
        "<strong>now</strong></p>"
    )
