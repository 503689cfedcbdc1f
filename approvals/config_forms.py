"""Proposal forms for maintenance windows, holiday calendars and pools (approvals.config_changes validates)."""

from __future__ import annotations

from typing import cast

from django import forms

from jobs.models import WindowPolicy
from jobs.schedule import isoz
from monitoring.models import RECOVERY_RULE_FIELDS, RecoveryActionKind, Severity

from .forms import ProposalForm


class ConfigProposalForm(ProposalForm):
    """Justification and ticket, plus ``place`` for a create (``t<tenant id>`` for tenant-wide,
    ``e<environment id>`` for one environment). Subclasses add the object's fields and
    build its definition; the service's field errors land on the matching form fields."""

    def __init__(self, *args, places: list[tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if places is None:
            del self.fields["place"]
        else:
            cast(forms.ChoiceField, self.fields["place"]).choices = [("", "Choose where it applies"), *places]

    service_field_names = {"environment": "place", "tenant": "place", "target": None}


class WindowForm(ConfigProposalForm):
    field_order = [
        "place",
        "name",
        "starts_at",
        "ends_at",
        "cron",
        "timezone",
        "duration_minutes",
        "policy",
        "justification",
        "ticket",
        "apply_after",
        "emergency",
    ]

    place = forms.ChoiceField(label="Applies to")
    name = forms.CharField(max_length=200, help_text="What the window is for, e.g. 'db upgrade'.")
    starts_at = forms.DateTimeField(
        required=False,
        label="Starts (UTC)",
        help_text="One-off window: start and end. Leave empty for a recurring one.",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    ends_at = forms.DateTimeField(
        required=False,
        label="Ends (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    cron = forms.CharField(
        required=False,
        max_length=120,
        label="Opens at (cron)",
        help_text="Recurring window: when each one opens, e.g. '0 2 * * SUN'.",
        widget=forms.TextInput(attrs={"class": "mono", "placeholder": "0 2 * * SUN"}),
    )
    timezone = forms.CharField(
        required=False,
        max_length=64,
        initial="UTC",
        help_text="Zone of the cron (recurring windows).",
        widget=forms.TextInput(attrs={"list": "timezones", "autocomplete": "off"}),
    )
    duration_minutes = forms.IntegerField(required=False, label="Lasts (minutes)", help_text="Recurring windows.")
    policy = forms.ChoiceField(choices=WindowPolicy.choices, initial=WindowPolicy.DEFER)

    def definition(self) -> dict:
        data = self.cleaned_data
        starts_at, ends_at = data.get("starts_at"), data.get("ends_at")
        definition = {
            "name": data["name"],
            "starts_at": isoz(starts_at) if starts_at else None,
            "ends_at": isoz(ends_at) if ends_at else None,
            "cron": data.get("cron") or "",
            "timezone": data.get("timezone") or "UTC",
            "duration_minutes": data.get("duration_minutes"),
            "policy": data["policy"],
        }
        return definition

    @staticmethod
    def initial_from(definition: dict) -> dict:
        from django.utils.dateparse import parse_datetime

        initial = dict(definition)
        for field in ("starts_at", "ends_at"):
            if initial.get(field):
                initial[field] = parse_datetime(initial[field])
        return initial


class CalendarForm(ConfigProposalForm):
    field_order = ["place", "name", "dates", "country", "years", "justification", "ticket", "apply_after", "emergency"]

    place = forms.ChoiceField(label="Tenant")
    name = forms.SlugField(max_length=100, help_text="Jobs refer to the calendar by this name, e.g. de-bank.")
    dates = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 5, "class": "mono", "placeholder": "2026-12-24\n2026-12-31"}),
        help_text="ISO dates to skip, one per line (or separated by commas).",
    )
    country = forms.CharField(required=False, max_length=8, help_text="ISO country code, e.g. DE.")
    years = forms.CharField(
        required=False,
        help_text="Add the country's public holidays for these years (holidays package), e.g. 2026, 2027.",
    )

    def clean_years(self) -> list[int]:
        raw = self.cleaned_data.get("years") or ""
        try:
            return [int(part) for part in raw.replace(",", " ").split()]
        except ValueError:
            raise forms.ValidationError("Give years as numbers, e.g. 2026, 2027.") from None

    def definition(self) -> dict:
        data = self.cleaned_data
        dates = [part for part in (data.get("dates") or "").replace(",", "\n").split() if part]
        definition = {"name": data["name"], "dates": dates, "country": data.get("country") or ""}
        if data.get("years"):
            definition["years"] = data["years"]
        return definition

    @staticmethod
    def initial_from(definition: dict) -> dict:
        return {**definition, "dates": "\n".join(definition.get("dates") or [])}


class PoolForm(ConfigProposalForm):
    field_order = [
        "place",
        "name",
        "slots",
        "reserved_critical_slots",
        "description",
        "justification",
        "ticket",
        "apply_after",
        "emergency",
    ]

    place = forms.ChoiceField(label="Environment")
    name = forms.SlugField(max_length=100, help_text="Jobs name their pool, e.g. batch.")
    slots = forms.IntegerField(help_text="Runs of the pool's jobs queued or running at once (0 drains it).")
    reserved_critical_slots = forms.IntegerField(
        initial=0, label="Reserved for critical jobs", help_text="Of those slots, how many only critical jobs use."
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def definition(self) -> dict:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "slots": data["slots"],
            "reserved_critical_slots": data["reserved_critical_slots"],
            "description": data.get("description") or "",
        }

    @staticmethod
    def initial_from(definition: dict) -> dict:
        return dict(definition)


class DeleteConfigForm(ConfigProposalForm):
    place = forms.ChoiceField(required=False)


def _numbers(raw: str) -> list[int]:
    try:
        return [int(part) for part in (raw or "").replace(",", " ").split()]
    except ValueError:
        raise forms.ValidationError("Give whole numbers separated by commas, e.g. 3, 75.") from None


class RecoveryRuleForm(ConfigProposalForm):
    """A recovery rule (monitoring.recovery_rules validates it against the environment's live jobs)."""

    field_order = ["place", *RECOVERY_RULE_FIELDS, "justification", "ticket", "apply_after", "emergency"]

    place = forms.ChoiceField(label="Environment")
    name = forms.SlugField(max_length=100, help_text="e.g. retry-on-lock.")
    job = forms.CharField(required=False, max_length=200, help_text="The job it watches (or give a team).")
    team = forms.SlugField(required=False, max_length=100, help_text="Or every job of this team (its slug).")
    exit_codes = forms.CharField(required=False, help_text="Matching exit codes, e.g. 3, 75.")
    output_pattern = forms.CharField(
        required=False,
        max_length=1000,
        help_text="RE2 regular expression searched in the output (linear time: no backreferences or lookaround).",
        widget=forms.TextInput(attrs={"class": "mono"}),
    )
    http_statuses = forms.CharField(required=False, label="HTTP statuses", help_text="HTTP jobs, e.g. 502, 503.")
    action = forms.ChoiceField(choices=RecoveryActionKind.choices)
    retry_attempts = forms.IntegerField(initial=3, help_text="Retry: how many retries at most.")
    retry_delay_seconds = forms.IntegerField(initial=30, label="First retry after (s)")
    retry_factor = forms.FloatField(initial=2.0, help_text="Each further retry waits this many times longer.")
    remediation_job = forms.CharField(
        required=False, max_length=200, help_text="Remediate: a live job of the same environment."
    )
    severity = forms.ChoiceField(choices=Severity.choices, initial=Severity.HIGH)
    max_actions = forms.IntegerField(initial=3, label="At most (actions)")
    window_minutes = forms.IntegerField(initial=60, label="per (minutes), per job")

    def clean_exit_codes(self) -> list[int]:
        return _numbers(self.cleaned_data.get("exit_codes") or "")

    def clean_http_statuses(self) -> list[int]:
        return _numbers(self.cleaned_data.get("http_statuses") or "")

    def definition(self) -> dict:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "job": data.get("job") or "",
            "team": data.get("team") or "",
            "exit_codes": data["exit_codes"],
            "output_pattern": data.get("output_pattern") or "",
            "http_statuses": data["http_statuses"],
            "action": data["action"],
            "retry_attempts": data["retry_attempts"],
            "retry_delay_seconds": data["retry_delay_seconds"],
            "retry_factor": data["retry_factor"],
            "remediation_job": data.get("remediation_job") or "",
            "severity": data["severity"],
            "max_actions": data["max_actions"],
            "window_minutes": data["window_minutes"],
        }

    @staticmethod
    def initial_from(definition: dict) -> dict:
        return {
            **definition,
            "exit_codes": ", ".join(str(code) for code in definition.get("exit_codes") or []),
            "http_statuses": ", ".join(str(code) for code in definition.get("http_statuses") or []),
        }
