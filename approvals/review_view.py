"""The reviewer's view of a new job: what is set, what is non-standard and why, in plain words.

A create request's definition has some forty fields, most at their defaults; a reviewer needs the
few that were chosen, the non-standard traits with the author's rationale first, and values that
read as words (``{}`` is "none", a max of 0 active runs is "no limit").
"""

from __future__ import annotations

import json

from django.core.exceptions import FieldDoesNotExist
from django.db.models import Field

from jobs import schedule
from jobs.lifecycle import nonstandard_reasons
from jobs.models import DEFINITION_FIELDS, Job

from .models import ChangeRequest

# Always shown, even at a default: what the job is, what it runs, when, and what to do when it fails.
ALWAYS_SHOWN = (
    "name",
    "description",
    "criticality",
    "kind",
    "command",
    "cron",
    "timezone",
    "timeout_seconds",
    "runbook",
)
EMPTY = ("", "{}", "[]", "null")
# Values whose meaning is not in the number.
EXPLAINED = {
    ("max_active_runs", "0"): "0 (no limit on runs active at once)",
    ("catchup_limit", "0"): "0 (no missed slot is caught up)",
}


def display_value(field: str, value: object) -> str:
    """A definition value as the diff shows it (the create view compares defaults in the same form)."""
    if value is None:
        return ""
    if field == "command" and isinstance(value, list):
        return "\n".join(str(item) for item in value)
    if isinstance(value, list | dict):
        return json.dumps(value, indent=2, sort_keys=True)
    return str(value)


def _default_text(field: str) -> str | None:
    """The default as the diff displays it (None when the field has no default)."""
    try:
        model_field = Job._meta.get_field(field)
    except FieldDoesNotExist:  # a definition field that is not a column has no default
        return None
    if not isinstance(model_field, Field):  # a reverse relation is no definition field
        return None
    if not model_field.has_default():
        return "" if model_field.null or model_field.blank else None
    return display_value(field, model_field.get_default())


def shown(field: str, text: str | None) -> str:
    """A displayed value in words: empty, ``{}`` and ``[]`` are "none"; some numbers explained."""
    if text is None or text.strip() in EMPTY:
        return "none"
    return EXPLAINED.get((field, text.strip()), text)


def reviewer_create_view(change: ChangeRequest, rows: list[dict]) -> dict:
    """{nonstandard: [reason], rationale, set_rows, default_rows} for a job create request; ``rows``
    are ``views.definition_diff`` rows (``after`` is the proposed value as text)."""
    proposed = change.proposed or {}
    seed = schedule.job_seed(change.tenant_id, change.environment_id, proposed.get("name", ""))
    set_rows, default_rows = [], []
    for row in rows:
        if row["field"] not in DEFINITION_FIELDS:
            continue
        text = row["after"] or ""
        item = {**row, "shown": shown(row["field"], text)}
        if row["field"] == "rationale":
            continue  # shown at the top, beside the traits that need it
        is_default = text.strip() in EMPTY or text == _default_text(row["field"])
        if row["field"] in ALWAYS_SHOWN or not is_default:
            set_rows.append(item)
        else:
            default_rows.append(item)
    return {
        "nonstandard": nonstandard_reasons(proposed, seed=seed),
        "rationale": (proposed.get("rationale") or "").strip(),
        "set_rows": set_rows,
        "default_rows": default_rows,
    }
