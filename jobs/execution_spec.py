"""The execution part of a job definition: kind, argv and its parameters, limits,
retries, HTTP requests, heartbeats and workflow edges.

``clean_execution`` validates a proposed definition (before a change is
submitted); ``resolve_command`` and ``resolve_parameters`` validate again and
render right before a run starts. Parameter values reach a process only as
whole argv items (an item that is exactly ``{name}``) or environment variables
(``GOVERNOR_PARAM_<NAME>``), never through a shell or string concatenation.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from governance.models import Environment, Tenant
from governance.patterns import UserSchemaValidator, schema_errors

from .models import JobKind
from .placeholders import ANY_PLACEHOLDER, PARAM_NAME, WHOLE_PLACEHOLDER

SCALAR_TYPES = {"string", "integer", "number", "boolean"}
LIMIT_KEYS = {
    "cpu_seconds": (1, 7 * 24 * 3600),
    "memory_mb": (16, 1024 * 1024),
    "file_size_mb": (1, 1024 * 1024),
    "processes": (1, 100000),
}
RETRY_DEFAULTS = {"max_attempts": 1, "backoff_seconds": 1.0, "backoff_cap_seconds": 300.0, "transient_exit_codes": []}
MAX_ATTEMPTS = 20
HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"}
EDGE_CONDITIONS = {"success", "failure", "always", "exit_code", "output_schema"}
MAX_HEADER_VALUE = 8192


class ParameterError(Exception):
    """Parameter values that do not satisfy the job's schema at run start."""


def _instance_errors(schema: dict, instance: Any) -> list[str]:
    return _messages(UserSchemaValidator(schema).iter_errors(instance))


def _messages(errors) -> list[str]:
    messages = []
    for error in sorted(errors, key=lambda e: list(e.path)):
        where = "/".join(str(p) for p in error.path) or "(root)"
        messages.append(f"{where}: {error.message}")
    return messages


def parameter_value_errors(schema: dict, values: dict) -> dict[str, list[str]]:
    """Values checked against a parameter schema, per parameter name ("" for errors not tied to one),
    so a form can show each message beside its field."""
    per_name: dict[str, list[str]] = {}
    validator = UserSchemaValidator(schema)
    for error in validator.iter_errors(_with_defaults(schema, values)):
        if error.path:
            name = str(error.path[0])
        elif error.validator == "required":
            # "'region' is a required property": the missing name is the first quoted word.
            name = next((n for n in schema.get("required") or [] if n not in values), "")
        else:
            name = ""
        per_name.setdefault(name, []).append(error.message)
    return per_name


def _with_defaults(schema: dict, values: dict) -> dict:
    merged = dict(values)
    for name, spec in (schema.get("properties") or {}).items():
        if name not in merged and isinstance(spec, dict) and "default" in spec:
            merged[name] = spec["default"]
    return merged


def clean_parameters(parameters: Any, *, tenant: Tenant, environment: Environment, errors: dict) -> dict:
    if parameters in (None, {}):
        return {}
    if not isinstance(parameters, dict) or set(parameters) - {"schema", "values"}:
        errors["parameters"] = ['Must be {"schema": <JSON Schema>, "values": {<environment>: {<name>: <value>}}}.']
        return {}
    schema = parameters.get("schema") or {"type": "object", "properties": {}}
    problems = schema_errors(schema, "The parameter schema")
    if not problems:
        if schema.get("type") != "object":
            problems.append('The parameter schema must have "type": "object".')
        for name, spec in (schema.get("properties") or {}).items():
            if not PARAM_NAME.match(name):
                problems.append(f"Parameter name {name!r} must be letters, digits and underscores.")
            elif not isinstance(spec, dict) or spec.get("type") not in SCALAR_TYPES:
                problems.append(
                    f"Parameter {name!r} must declare a scalar type (string, integer, number or boolean): "
                    "each value becomes one argv item or one environment variable."
                )
    values = parameters.get("values") or {}
    if not isinstance(values, dict):
        problems.append("values must map environment slugs to objects.")
        values = {}
    if not problems:
        known = set(Environment.objects.filter(tenant=tenant).values_list("slug", flat=True))
        for env_slug, env_values in values.items():
            if env_slug not in known:
                problems.append(f"values: {env_slug!r} is not an environment of this tenant.")
                continue
            if not isinstance(env_values, dict):
                problems.append(f"values.{env_slug} must be an object.")
                continue
            for message in _instance_errors(schema, _with_defaults(schema, env_values)):
                problems.append(f"values.{env_slug}: {message}")
        if environment.slug not in values:
            for message in _instance_errors(schema, _with_defaults(schema, {})):
                problems.append(f"values.{environment.slug} (this job's environment): {message}")
    if problems:
        errors["parameters"] = problems
        return {}
    return {"schema": schema, "values": values}


def allowed_executables(tenant: Tenant) -> list[str]:
    """The tenant's allow-list of executables (fnmatch patterns): its policy's, or the defaults."""
    from .models import TenantExecutionPolicy

    try:
        return tenant.execution_policy.allowed_executables
    except TenantExecutionPolicy.DoesNotExist:
        return settings.GOVERNOR_DEFAULT_ALLOWED_EXECUTABLES


def executable_allowed(tenant: Tenant, program: str, patterns: list[str] | None = None) -> bool:
    """Is ``program`` on the tenant's allow-list (``patterns`` when the caller read it already)?"""
    if patterns is None:
        patterns = allowed_executables(tenant)
    return any(fnmatch.fnmatchcase(program, pattern) for pattern in patterns)


def _clean_command(
    command: Any,
    parameters: dict,
    tenant: Tenant,
    errors: dict,
    max_items: int,
    max_len: int,
    partitioned: bool = False,
):
    if not isinstance(command, list) or not command:
        errors["command"] = ['Must be a non-empty list of strings (argv), e.g. ["/bin/echo", "hello"].']
        return []
    if not all(isinstance(item, str) for item in command):
        errors["command"] = ["Every argv item must be a string."]
        return []
    if len(command) > max_items:
        errors["command"] = [f"At most {max_items} argv items."]
        return []
    if any(len(item) > max_len or "\x00" in item for item in command):
        errors["command"] = [f"Argv items must be under {max_len} characters and contain no NUL byte."]
        return []
    program = command[0]
    problems = []
    # Absolute and normalised, so an allow-list pattern like /usr/bin/* cannot be escaped with "..".
    if not program.startswith("/") or os.path.normpath(program) != program:
        problems.append(f"The program must be an absolute, normalised path (e.g. /usr/bin/rsync), not {program!r}.")
    elif not executable_allowed(tenant, program):
        problems.append(f"{program!r} is not on the tenant's allow-list of executables.")
    declared = set(((parameters.get("schema") or {}).get("properties") or {}).keys())
    if partitioned:
        declared.add("partition")
    for position, item in enumerate(command):
        whole = WHOLE_PLACEHOLDER.match(item)
        if whole:
            if position == 0:
                problems.append("The program itself cannot be a parameter.")
            elif whole.group(1) not in declared:
                problems.append(f"argv[{position}] uses {{{whole.group(1)}}}, which is not a declared parameter.")
        elif ANY_PLACEHOLDER.search(item):
            problems.append(
                f"argv[{position}] {item!r}: a parameter placeholder must be a whole argv item "
                "(values are never spliced into text)."
            )
    if problems:
        errors["command"] = problems
        return []
    return list(command)


PARTITION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_PARTITIONS = 100


def _clean_partitions(partitions: Any, kind: str, errors: dict) -> list[str]:
    if partitions in (None, []):
        return []
    if kind != JobKind.COMMAND and kind != JobKind.HTTP:
        errors["partitions"] = ["Only command and HTTP jobs fan out over partitions."]
        return []
    if (
        not isinstance(partitions, list)
        or not 1 <= len(partitions) <= MAX_PARTITIONS
        or not all(isinstance(p, str) and PARTITION_NAME.match(p) for p in partitions)
    ):
        errors["partitions"] = [
            f"Must be a list of 1 to {MAX_PARTITIONS} names (letters, digits, '.', '_' or '-', up to 64 characters)."
        ]
        return []
    if len(set(partitions)) != len(partitions):
        errors["partitions"] = ["Each partition may be listed once."]
        return []
    return list(partitions)


def _clean_limits(limits: Any, errors: dict) -> dict:
    if limits in (None, {}):
        return {}
    if not isinstance(limits, dict):
        errors["limits"] = [f"Must be an object with any of: {', '.join(sorted(LIMIT_KEYS))}."]
        return {}
    problems = []
    for key, value in limits.items():
        if key not in LIMIT_KEYS:
            problems.append(f"Unknown limit {key!r} (known: {', '.join(sorted(LIMIT_KEYS))}).")
            continue
        low, high = LIMIT_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append(f"{key} must be a whole number between {low} and {high}.")
    if problems:
        errors["limits"] = problems
        return {}
    return dict(limits)


def _clean_retry(retry: Any, errors: dict) -> dict:
    if retry in (None, {}):
        return {}
    if not isinstance(retry, dict) or set(retry) - set(RETRY_DEFAULTS):
        errors["retry"] = [f"Must be an object with any of: {', '.join(RETRY_DEFAULTS)}."]
        return {}
    problems = []
    merged = {**RETRY_DEFAULTS, **retry}
    attempts = merged["max_attempts"]
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= MAX_ATTEMPTS:
        problems.append(f"max_attempts must be a whole number between 1 and {MAX_ATTEMPTS}.")
    for key in ("backoff_seconds", "backoff_cap_seconds"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86400:
            problems.append(f"{key} must be a number of seconds between 0 and 86400.")
    codes = merged["transient_exit_codes"]
    if not isinstance(codes, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 255 for c in codes
    ):
        problems.append("transient_exit_codes must be a list of exit codes between 1 and 255.")
    if problems:
        errors["retry"] = problems
        return {}
    return dict(retry)


def _clean_http(http: Any, kind: str, environment: Environment, errors: dict) -> dict:
    if kind != JobKind.HTTP:
        if http not in (None, {}):
            errors["http"] = ["Only HTTP jobs have an HTTP request."]
        return {}
    if not isinstance(http, dict) or not http.get("url"):
        errors["http"] = ['HTTP jobs need {"url": ..., "method": "GET"} at least.']
        return {}
    known = {"method", "url", "headers", "body", "success_status", "response_schema"}
    problems = []
    if set(http) - known:
        problems.append(f"Unknown HTTP field(s): {', '.join(sorted(set(http) - known))}.")
    method = str(http.get("method", "GET")).upper()
    if method not in HTTP_METHODS:
        problems.append(f"method must be one of {', '.join(sorted(HTTP_METHODS))}.")
    url = http.get("url")
    if not isinstance(url, str):
        problems.append("url must be a string.")
    else:
        from .http_jobs import HostRefused, check_url_host

        try:
            check_url_host(url, environment, resolve=False)
        except HostRefused as exc:
            problems.append(str(exc))
    headers = http.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str)
        and isinstance(v, str)
        and "\n" not in k + v
        and "\r" not in k + v
        and len(v) < MAX_HEADER_VALUE
        for k, v in headers.items()
    ):
        problems.append("headers must map names to single-line strings.")
    statuses = http.get("success_status") or [200, 201, 202, 204]
    if not isinstance(statuses, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in statuses
    ):
        problems.append("success_status must be a list of HTTP status codes.")
    if "response_schema" in http:
        problems += schema_errors(http["response_schema"], "response_schema")
    if problems:
        errors["http"] = problems
        return {}
    cleaned = {"method": method, "url": url, "headers": dict(headers), "success_status": statuses}
    if "body" in http:
        cleaned["body"] = http["body"]
    if "response_schema" in http:
        cleaned["response_schema"] = http["response_schema"]
    return cleaned


def _clean_heartbeat(heartbeat: Any, kind: str, errors: dict) -> dict:
    if heartbeat in (None, {}):
        if kind == JobKind.EXTERNAL:
            return {"grace_seconds": 3600}
        return {}
    grace = heartbeat.get("grace_seconds") if isinstance(heartbeat, dict) else None
    if (
        not isinstance(heartbeat, dict)
        or set(heartbeat) - {"grace_seconds"}
        or isinstance(grace, bool)
        or not isinstance(grace, int)
        or not 1 <= grace <= 7 * 24 * 3600
    ):
        errors["heartbeat"] = ['Must be {"grace_seconds": <1 .. 604800>}.']
        return {}
    return {"grace_seconds": grace}


def clean_execution(
    merged: dict,
    *,
    tenant: Tenant,
    environment: Environment,
    errors: dict,
    max_items: int,
    max_len: int,
    job=None,
) -> dict:
    """Validate and normalise the execution fields of ``merged``; problems go into ``errors``."""
    kind = merged.get("kind") or JobKind.COMMAND
    if kind not in JobKind.values:
        errors["kind"] = [f"Must be one of: {', '.join(JobKind.values)}."]
        kind = JobKind.COMMAND
    parameters = clean_parameters(merged.get("parameters"), tenant=tenant, environment=environment, errors=errors)
    partitions = _clean_partitions(merged.get("partitions"), kind, errors)
    command: list[str] = []
    if kind == JobKind.COMMAND:
        command = _clean_command(
            merged.get("command"), parameters, tenant, errors, max_items, max_len, partitioned=bool(partitions)
        )
    elif merged.get("command") not in (None, []):
        errors["command"] = [f"{JobKind(kind).label} jobs have no command."]
    idempotent = merged.get("idempotent", False)
    if not isinstance(idempotent, bool):
        errors["idempotent"] = ["Must be true or false."]
    from .workflows import clean_dependencies

    dependencies = clean_dependencies(
        merged.get("dependencies"),
        tenant=tenant,
        environment=environment,
        name=merged.get("name"),
        job=job,
        errors=errors,
    )
    return {
        "kind": kind,
        "command": command,
        "parameters": parameters,
        "limits": _clean_limits(merged.get("limits"), errors),
        "retry": _clean_retry(merged.get("retry"), errors),
        "idempotent": bool(idempotent),
        "http": _clean_http(merged.get("http"), kind, environment, errors),
        "heartbeat": _clean_heartbeat(merged.get("heartbeat"), kind, errors),
        "dependencies": dependencies,
        "partitions": partitions,
    }


# --- run start: validate again and render ---


@functools.lru_cache(maxsize=512)
def _run_schema(schema_json: str) -> tuple[tuple[str, ...], Any]:
    """The schema's own problems, or its validator. Checking a schema against the meta-schema
    costs more than running ``/bin/true``; the answer never changes for the same schema text."""
    schema = json.loads(schema_json)
    problems = tuple(schema_errors(schema, "The parameter schema"))
    return problems, None if problems else UserSchemaValidator(schema)


def resolve_parameters(definition: dict, environment_slug: str) -> dict:
    """The parameter values for this environment, validated against the schema (raises ParameterError)."""
    parameters = definition.get("parameters") or {}
    schema = parameters.get("schema") or {"type": "object", "properties": {}}
    values = _with_defaults(schema, (parameters.get("values") or {}).get(environment_slug) or {})
    if isinstance(schema, dict):
        known_problems, validator = _run_schema(json.dumps(schema, sort_keys=True))
        problems = list(known_problems) if validator is None else _messages(validator.iter_errors(values))
    else:
        problems = schema_errors(schema, "The parameter schema")
    if problems:
        raise ParameterError("Parameters invalid for this environment: " + "; ".join(problems))
    return values


def render_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def resolve_command(definition: dict, values: dict) -> list[str]:
    """argv with every whole-item placeholder replaced by its value as one item."""
    argv = []
    for item in definition["command"]:
        match = WHOLE_PLACEHOLDER.match(item)
        if match:
            name = match.group(1)
            if name not in values:
                raise ParameterError(f"Parameter {name!r} has no value in this environment.")
            argv.append(render_value(values[name]))
        else:
            argv.append(item)
    return argv


def parameter_environment(values: dict) -> dict[str, str]:
    return {f"GOVERNOR_PARAM_{name.upper()}": render_value(value) for name, value in values.items()}


def http_host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
