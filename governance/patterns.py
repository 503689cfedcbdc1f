"""Regular expressions written by users, compiled by RE2 (linear time) or refused.

A tenant author is assumed hostile: a backtracking engine (Python's ``re``) matching ``^(a+)+$``
against 30 characters stalls a worker for minutes. Every user-supplied pattern (a tenant's naming
pattern, ``pattern``/``patternProperties``/``format: regex`` in a JSON Schema of a job definition)
goes through ``compile_user_pattern``, which uses RE2: matching time grows linearly with the input,
whatever the pattern. A pattern RE2 cannot compile (backreferences such as ``\\1``, lookaround such
as ``(?=``, possessive quantifiers) is refused; it is never handed to ``re`` instead.

``UserSchemaValidator`` is the JSON Schema validator for user schemas: Draft 2020-12 with every
keyword that matches a regular expression going through RE2 (built with jsonschema's public
``validators.extend``). ``schema_problems`` checks a user schema against the meta-schema, naming the
path of a pattern RE2 refuses.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import re2
from django.core.exceptions import ValidationError
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import SchemaError
from jsonschema.exceptions import ValidationError as SchemaValidationError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

# Longer patterns are refused before compiling: RE2's own memory budget (below) bounds the rest.
MAX_PATTERN_LENGTH = 1000
RE2_ONLY = "Only linear-time (RE2) regular expression syntax is accepted"


class PatternError(ValueError):
    """A user pattern that is not accepted; the message says why (and names RE2)."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # A refused pattern is the caller's answer, not a log line.
    options.max_mem = 1 << 20  # 1 MiB per compiled program: large repetitions are refused, not built.
    return options


_OPTIONS = _options()


@functools.lru_cache(maxsize=1024)
def compile_user_pattern(pattern: str):
    """The RE2 program for ``pattern`` (cached), or PatternError. Use its ``search``/``fullmatch``."""
    if not isinstance(pattern, str):
        raise PatternError("A regular expression must be a string.")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"A regular expression may have at most {MAX_PATTERN_LENGTH} characters.")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(f"{RE2_ONLY}, without backreferences, lookaround or huge repetitions ({reason}).") from None


# Fixed patterns the code matches against user text (a runbook) use the same engine.
linear_pattern = compile_user_pattern


def pattern_problem(pattern: Any) -> str | None:
    """Why ``pattern`` is refused, or None when RE2 compiles it."""
    try:
        compile_user_pattern(pattern)
    except PatternError as exc:
        return str(exc)
    return None


def validate_user_pattern(value: Any) -> None:
    """Django field validator: a model or form field holding a user pattern."""
    problem = pattern_problem(value)
    if problem:
        raise ValidationError(problem, code="pattern")


# --- JSON Schema ------------------------------------------------------------------------------


def _search(pattern: str, text: str) -> bool:
    # JSON Schema patterns are unanchored (ECMA-262 search). A pattern RE2 refuses matches nothing
    # here; schema_problems refuses it when the schema is proposed.
    try:
        return compile_user_pattern(pattern).search(text) is not None
    except PatternError:
        return False


def _pattern(validator, pattern, instance, schema) -> Iterator[SchemaValidationError]:
    if not validator.is_type(instance, "string"):
        return
    problem = pattern_problem(pattern)
    if problem:
        yield SchemaValidationError(f"The pattern {pattern!r} is refused: {problem}")
    elif not _search(pattern, instance):
        yield SchemaValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator, pattern_properties, instance, schema) -> Iterator[SchemaValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator, additional, instance, schema) -> Iterator[SchemaValidationError]:
    # jsonschema's own keyword finds the extras with ``re.search``: the same, through RE2.
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [k for k in instance if k not in properties and not any(_search(p, k) for p in patterns)]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        joined = ", ".join(repr(each) for each in sorted(extras))
        verb = "does" if len(extras) == 1 else "do"
        if patterns:
            yield SchemaValidationError(
                f"{joined} {verb} not match any of the regexes: {', '.join(map(repr, patterns))}"
            )
        else:
            yield SchemaValidationError(f"Additional properties are not allowed ({joined} unexpected)")


def _is_regex(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    problem = pattern_problem(instance)
    if problem:
        raise PatternError(problem)
    return True


FORMAT_CHECKER = FormatChecker()
for _name, _check in Draft202012Validator.FORMAT_CHECKER.checkers.items():
    FORMAT_CHECKER.checks(_name, raises=_check[1])(_check[0])
FORMAT_CHECKER.checks("regex", raises=PatternError)(_is_regex)

UserSchemaValidator = validators.extend(
    Draft202012Validator,
    validators={
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    },
    format_checker=FORMAT_CHECKER,
)

# ``unevaluatedProperties`` matches ``patternProperties`` with ``re.search`` inside jsonschema's
# private helpers: with both in one schema, that schema is refused rather than matched by ``re``.
_REGEX_KEYWORDS = ("patternProperties",)


def _walk(schema: Any) -> Iterator[dict]:
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _reference_problems(schema: dict) -> list[str]:
    """A reference jsonschema cannot resolve fails at validation time (at run start, or as a 500):
    only references inside the schema itself are accepted, and they must point somewhere."""
    uri = "urn:governor:schema"
    resolver = Registry().with_resource(uri, DRAFT202012.create_resource(schema)).resolver(base_uri=uri)
    problems = []
    for node in _walk(schema):
        for keyword in ("$ref", "$dynamicRef"):
            ref = node.get(keyword)
            if not isinstance(ref, str):
                continue
            if not ref.startswith("#"):
                problems.append(f"{keyword} {ref!r}: only references inside the schema (#/$defs/...) are accepted.")
                continue
            try:
                resolver.lookup(ref)
            except Unresolvable:
                problems.append(f"{keyword} {ref!r} points nowhere in the schema.")
    return problems


def schema_problems(schema: Any) -> list[str]:
    """Why a user JSON Schema is refused (empty when it is valid and every pattern compiles in RE2),
    each message naming where in the schema."""
    try:
        UserSchemaValidator.check_schema(schema, format_checker=FORMAT_CHECKER)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        cause = exc.cause if isinstance(exc.cause, PatternError) else None
        if cause is None and exc.validator == "format" and exc.validator_value == "regex":
            cause = PatternError(pattern_problem(exc.instance) or RE2_ONLY)
        return [f"{where}: {cause}" if cause else exc.message]
    keywords = {key for node in _walk(schema) for key in node}
    if "unevaluatedProperties" in keywords and "patternProperties" in keywords:
        return ['"unevaluatedProperties" cannot be combined with "patternProperties" in a job schema.']
    return _reference_problems(schema) if isinstance(schema, dict) else []


def schema_errors(schema: Any, field: str) -> list[str]:
    """``schema_problems`` of a schema given in ``field``, each message naming that field."""
    if not isinstance(schema, dict):
        return [f"{field} must be a JSON Schema object."]
    # User schemas match their patterns with RE2 (linear time); one RE2 refuses is refused here.
    return [f"{field} is not a valid JSON Schema: {problem}" for problem in schema_problems(schema)]
