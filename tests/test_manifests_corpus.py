"""The manifest corpus: valid manifests pass, each invalid one gives exactly its expected messages."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from django.core.management import call_command

from governance.models import Tenant
from jobs.models import Job
from manifests.loader import read_paths, read_texts
from manifests.validate import check

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "manifests"
INVALID = sorted(p for p in (CORPUS / "invalid").iterdir() if p.suffix != ".expected")
VALID = sorted((CORPUS / "valid").iterdir())


@pytest.fixture
def in_corpus(monkeypatch):
    # Messages name files as given on the command line: run from the corpus so they read as in the .expected files.
    monkeypatch.chdir(CORPUS)


def _problems(*paths: str) -> list[str]:
    return [str(p) for p in check(read_paths(list(paths)), against_server=False).problems]


@pytest.mark.parametrize("case", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_reports_exactly_the_expected_errors(db, in_corpus, case):
    expected = (case.parent / f"{case.stem}.expected").read_text().splitlines()
    assert expected, "an invalid case must expect at least one error"
    assert _problems("tenant.yaml", str(case.relative_to(CORPUS))) == expected


@pytest.mark.parametrize("case", VALID, ids=lambda p: p.stem)
def test_valid_manifest_has_no_errors(db, in_corpus, case):
    assert _problems("tenant.yaml", str(case.relative_to(CORPUS))) == []


def test_examples_are_valid(db, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert _problems("examples") == []


def _documents(path: Path):
    for file in sorted(path.rglob("*.yaml")) if path.is_dir() else [path]:
        yield from (doc for doc in yaml.safe_load_all(file.read_text()) if doc is not None)


def test_published_schema_accepts_the_valid_corpus_and_examples():
    schema = json.loads((ROOT / "docs" / "manifest.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    documents = [*_documents(CORPUS / "valid"), *_documents(CORPUS / "tenant.yaml"), *_documents(ROOT / "examples")]
    assert len(documents) >= 5
    for document in documents:
        validator.validate(document)


def test_published_schema_rejects_an_unknown_job_field():
    schema = json.loads((ROOT / "docs" / "manifest.schema.json").read_text())
    document = next(_documents(CORPUS / "valid" / "minimal.yaml"))
    document["jobs"][0]["cronn"] = "0 * * * *"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, schema)


def test_validate_command_exits_1_with_file_line_column_messages(db, in_corpus, capsys):
    with pytest.raises(SystemExit) as exit_info:
        call_command("validate_manifests", "tenant.yaml", "invalid/bad_cron.yaml")
    assert exit_info.value.code == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("invalid/bad_cron.yaml:9:11: cron: Invalid cron expression '61 * * * *'")
    assert out[-1] == "1 error(s) in 2 file(s)."


def test_validate_command_exits_0_when_clean(db, in_corpus, capsys):
    call_command("validate_manifests", "tenant.yaml", "valid")
    assert capsys.readouterr().out.strip() == "OK: 5 file(s), 6 job(s), 11 environment definition(s)."


def test_validate_command_json_for_machines(db, in_corpus, capsys):
    with pytest.raises(SystemExit):
        call_command("validate_manifests", "tenant.yaml", "invalid/unknown_zone.yaml", "--json")
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False
    assert result["errors"] == [
        {
            "file": "invalid/unknown_zone.yaml",
            "line": 10,
            "column": 15,
            "message": "timezone: Unknown time zone 'Mars/Olympus': use an IANA name such as 'Europe/Berlin' or 'UTC'.",
        }
    ]


def test_offline_validation_needs_a_tenant_declaration(db, in_corpus):
    assert _problems("valid/minimal.yaml") == [
        "valid/minimal.yaml:3:9: Unknown tenant 'acme' (declare it in a kind: Tenant document, or check --against-server)."
    ]


def test_offline_validation_ignores_live_jobs_and_tenants(cast, in_corpus):
    # A live job with the same name does not matter offline: the manifests alone are checked.
    cast.make_job(cast.dev, cast.data)
    tenants, jobs = Tenant.objects.count(), Job.objects.count()
    assert _problems("tenant.yaml", "valid/minimal.yaml") == []
    # The sandbox it validates in is rolled back.
    assert (Tenant.objects.count(), Job.objects.count()) == (tenants, jobs)


def test_missing_path_is_an_error(db, in_corpus):
    assert _problems("tenant.yaml", "nope.yaml") == ["nope.yaml:1:1: No such file or directory."]


def test_against_server_checks_live_teams_and_environments(cast, in_corpus, tmp_path):
    manifest = tmp_path / "ops.yaml"
    manifest.write_text(
        "apiVersion: governor/v1\nkind: Jobs\ntenant: acme\nteam: ops\njobs: []\n"
        "---\napiVersion: governor/v1\nkind: Tenant\ntenant: acme\nteams: [payments, ops]\nenvironments: [dev, qa]\n"
    )
    problems = [
        str(p).replace(str(tmp_path), "T") for p in check(read_paths([str(manifest)]), against_server=True).problems
    ]
    assert problems == [
        "T/ops.yaml:4:7: Unknown team 'ops' in tenant 'acme' (teams: data, payments).",
        "T/ops.yaml:10:19: Team 'ops' does not exist in tenant 'acme'.",
        "T/ops.yaml:11:21: Environment 'qa' does not exist in tenant 'acme'.",
    ]


def test_against_server_command_accepts_the_examples(cast, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    call_command("validate_manifests", "examples", "--against-server")
    assert capsys.readouterr().out.startswith("OK: 3 file(s), 4 job(s), 9 environment definition(s).")


def test_a_control_character_is_a_positioned_syntax_error_not_a_crash():
    manifests = read_texts([("ci/bad.yaml", "kind: Jobs\nteam: pay\x92ments\n")])
    assert [(p.file, p.line, p.column, p.message) for p in manifests.problems] == [
        ("ci/bad.yaml", 2, 10, "YAML syntax error: character #x0092 is not allowed.")
    ]
