"""Live definitions as manifests, and the manifest JSON Schema.

The output is deterministic (teams, jobs and environments in a fixed order;
keys in definition order; fields at their default left out), so exporting,
applying the export to an empty tenant and exporting again gives the same bytes.
"""

from __future__ import annotations

from typing import Any

import yaml
from django.core.exceptions import FieldDoesNotExist
from django.db import models

from governance.access import Action, restrict
from governance.models import DEFAULT_NAMING_PATTERN, Environment, Team, Tenant
from jobs.models import DEFINITION_FIELDS, Criticality, Job, JobStatus

from .loader import API_VERSION, ENTRY_KEYS
from .validate import definition_defaults


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    if "*" in value:
        # Cron expressions read as one value when quoted, as people write them.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


def _list(dumper: yaml.SafeDumper, value: list) -> yaml.SequenceNode:
    # Short lists of plain values (environments, argv) read best on one line.
    flow = all(isinstance(item, str | int | float | bool) and "\n" not in str(item) for item in value)
    flow = flow and sum(len(str(item)) + 2 for item in value) < 100
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(list, _list)


def dump(documents: list[dict]) -> str:
    return yaml.dump_all(
        documents, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1_000_000
    )


def export_tenant(tenant: Tenant, *, actor, teams: list[str] | None = None) -> str:
    """The tenant's live jobs that ``actor`` may see, as one YAML stream: a ``kind: Tenant``
    document, then one ``kind: Jobs`` document per team."""
    team_rows = list(Team.objects.filter(tenant=tenant).order_by("slug"))
    if teams:
        team_rows = [t for t in team_rows if t.slug in teams]
    environments = list(Environment.objects.filter(tenant=tenant).order_by("order", "slug"))
    env_order = {e.pk: i for i, e in enumerate(environments)}
    env_slug = {e.pk: e.slug for e in environments}
    jobs = restrict(Job.objects.filter(tenant=tenant).exclude(status=JobStatus.DELETED), actor, Action.VIEW)
    by_team: dict[int, dict[str, list[Job]]] = {t.pk: {} for t in team_rows}
    for job in jobs:
        if job.team_id in by_team:
            by_team[job.team_id].setdefault(job.name, []).append(job)
    tenant_doc: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "Tenant", "tenant": tenant.slug}
    if tenant.naming_pattern != DEFAULT_NAMING_PATTERN:
        tenant_doc["naming_pattern"] = tenant.naming_pattern
    if tenant.secrets_by_team:
        tenant_doc["secrets_by_team"] = True
    tenant_doc["teams"] = [t.slug for t in team_rows]
    tenant_doc["environments"] = [e.slug for e in environments]
    documents = [tenant_doc]
    defaults = definition_defaults()
    for team in team_rows:
        entries = []
        for name in sorted(by_team[team.pk]):
            versions = sorted(by_team[team.pk][name], key=lambda j: env_order[j.environment_id])
            entries.append(_entry(name, [(env_slug[j.environment_id], j.definition()) for j in versions], defaults))
        documents.append(
            {"apiVersion": API_VERSION, "kind": "Jobs", "tenant": tenant.slug, "team": team.slug, "jobs": entries}
        )
    return dump(documents)


def _canonical(value: Any) -> Any:
    """Nested mappings in key order: JSON columns come back in a backend's own order (PostgreSQL's
    jsonb sorts by key length), and the export must not depend on the database."""
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def _entry(name: str, versions: list[tuple[str, dict]], defaults: dict) -> dict:
    """Base fields hold each field's most common value across the job's environments (ties: the
    earliest environment's); each environment's overrides hold only what differs from the base."""
    entry: dict[str, Any] = {"name": name, "environments": [env for env, _ in versions]}
    base: dict[str, Any] = {}
    for key in DEFINITION_FIELDS:
        if key == "name":
            continue
        values = [definition.get(key) for _, definition in versions]
        base[key] = max(values, key=lambda v: (values.count(v), -values.index(v)))
        if not (key in defaults and base[key] == defaults[key]) and key in versions[0][1]:
            entry[key] = _canonical(base[key])
    overrides = {}
    for env, definition in versions:
        changed = {
            key: _canonical(definition.get(key))
            for key in DEFINITION_FIELDS
            if key != "name" and definition.get(key) != base.get(key)
        }
        if changed:
            overrides[env] = changed
    if overrides:
        entry["overrides"] = overrides
    return entry


def _field_schema(name: str) -> dict:
    try:
        model_field = Job._meta.get_field(name)
    except FieldDoesNotExist:  # not a model column: any JSON value, checked by the server
        return {}
    if not isinstance(model_field, models.Field):  # a reverse relation is no definition field
        return {}
    schema: dict[str, Any] = {}
    if model_field.choices:
        schema["enum"] = [value for value, _ in model_field.choices]
    elif isinstance(model_field, models.BooleanField):
        schema["type"] = "boolean"
    elif isinstance(model_field, models.IntegerField):
        schema["type"] = "integer"
    elif isinstance(model_field, models.FloatField | models.DecimalField):
        schema["type"] = "number"
    elif isinstance(model_field, models.CharField | models.TextField):
        schema["type"] = "string"
        if getattr(model_field, "max_length", None):
            schema["maxLength"] = model_field.max_length
    if model_field.null:
        schema = {"anyOf": [schema or {}, {"type": "null"}]} if schema else {}
    text = str(model_field.help_text or model_field.verbose_name)
    if text:
        schema["description"] = text[0].upper() + text[1:]
    return schema


FIELD_NOTES = {
    "name": "Unique per tenant and environment; must follow the tenant's naming convention and start with the team's slug.",
    "command": "argv list, executed without a shell.",
    "cron": "5 fields, evaluated on the wall clock of `timezone`.",
    "timezone": "IANA time zone name, e.g. Europe/Berlin.",
    "criticality": "One of: " + ", ".join(Criticality.values) + ".",
}


def json_schema() -> dict:
    """The manifest format as JSON Schema (2020-12), generated from the definition fields."""
    fields = {}
    for name in DEFINITION_FIELDS:
        schema = _field_schema(name)
        if name == "command":
            schema = {"type": "array", "items": {"type": "string"}, "minItems": 1}
        if name == "tags":
            schema = {
                "type": "array",
                "items": {"type": "string", "pattern": r"^[a-z0-9]+(-[a-z0-9]+)*$", "maxLength": 50},
                "maxItems": 20,
                "uniqueItems": True,
                **schema,
            }
        if name in FIELD_NOTES:
            schema["description"] = FIELD_NOTES[name]
        fields[name] = schema
    slug = {"type": "string", "pattern": r"^[a-z0-9]+(-[a-z0-9]+)*$"}
    override_fields = {k: v for k, v in fields.items() if k != "name"}
    job: dict[str, Any] = {
        "type": "object",
        "required": ["name", "environments"],
        "properties": {
            **fields,
            "environments": {
                "description": "Environments (slugs) this job exists in.",
                "type": "array",
                "items": slug,
                "minItems": 1,
                "uniqueItems": True,
            },
            "overrides": {
                "description": "Per environment, the fields whose value differs there from the base above.",
                "type": "object",
                "propertyNames": slug,
                "additionalProperties": {
                    "type": "object",
                    "properties": override_fields,
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    }
    assert set(job["properties"]) == set(DEFINITION_FIELDS) | set(ENTRY_KEYS)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://governor.example/schemas/manifest-v1.json",
        "title": "Governor manifest document",
        "description": "One YAML document of a Governor manifest stream: kind Tenant or kind Jobs.",
        "oneOf": [{"$ref": "#/$defs/tenant"}, {"$ref": "#/$defs/jobs"}],
        "$defs": {
            "slug": slug,
            "tenant": {
                "type": "object",
                "required": ["apiVersion", "kind", "tenant", "teams", "environments"],
                "properties": {
                    "apiVersion": {"const": API_VERSION},
                    "kind": {"const": "Tenant"},
                    "tenant": slug,
                    "naming_pattern": {"type": "string", "description": "Regular expression job names must match."},
                    "secrets_by_team": {
                        "type": "boolean",
                        "description": "Secret references live under <prefix>/<tenant>/<environment>/<team>/ "
                        "(default false: <prefix>/<tenant>/<environment>/).",
                    },
                    "teams": {"type": "array", "items": slug, "uniqueItems": True},
                    "environments": {"type": "array", "items": slug, "uniqueItems": True},
                },
                "additionalProperties": False,
            },
            "jobs": {
                "type": "object",
                "required": ["apiVersion", "kind", "tenant", "team", "jobs"],
                "properties": {
                    "apiVersion": {"const": API_VERSION},
                    "kind": {"const": "Jobs"},
                    "tenant": slug,
                    "team": slug,
                    "jobs": {"type": "array", "items": {"$ref": "#/$defs/job"}},
                },
                "additionalProperties": False,
            },
            "job": job,
        },
    }
