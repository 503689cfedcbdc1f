"""The proposal form of an alert rule (``monitoring.rule_params`` validates; its field errors land
on the fields of the same name)."""

from __future__ import annotations

from django import forms

from monitoring.models import RuleKind, RuleScope, Severity
from monitoring.rule_params import DAYS, PARAM_FIELDS

from .config_forms import ConfigProposalForm


class AlertRuleForm(ConfigProposalForm):
    field_order = [
        "place",
        "name",
        "kind",
        "severity",
        "scope",
        "job",
        "team",
        "tag",
        "for_seconds",
        "enabled",
        *PARAM_FIELDS,
        "justification",
        "ticket",
        "apply_after",
        "emergency",
    ]

    place = forms.ChoiceField(label="Applies to", help_text="A job rule: the job's environment.")
    name = forms.SlugField(max_length=100, help_text="e.g. payments-nightly-failed.")
    kind = forms.ChoiceField(choices=RuleKind.choices)
    severity = forms.ChoiceField(choices=Severity.choices, initial=Severity.HIGH)
    scope = forms.ChoiceField(choices=RuleScope.choices)
    job = forms.CharField(required=False, max_length=200, help_text="Job scope: the job's name.")
    team = forms.CharField(required=False, max_length=100, help_text="Team scope: the team's slug.")
    tag = forms.CharField(required=False, max_length=50, help_text="Tag scope: jobs with this tag.")
    for_seconds = forms.IntegerField(
        required=False, initial=0, label="For (seconds)", help_text="The condition must hold this long first."
    )
    enabled = forms.BooleanField(required=False, initial=True)
    grace_seconds = forms.IntegerField(required=False, help_text="late_start: after the due time (default 600).")
    seconds = forms.IntegerField(required=False, help_text="long_running: absolute limit; heartbeat_silence: silence.")
    k = forms.FloatField(required=False, help_text="long_running: k x p95 of the last successful runs.")
    samples = forms.IntegerField(required=False, help_text="Successful runs the p95/p90 is taken over (default 20).")
    min_samples = forms.IntegerField(required=False, help_text="Fewer successful runs: no alert (default 5).")
    threshold = forms.FloatField(required=False, help_text="failure_rate: fraction of runs failed, e.g. 0.5.")
    window_seconds = forms.IntegerField(required=False, help_text="failure_rate: the window (default 86400).")
    min_runs = forms.IntegerField(required=False, help_text="failure_rate: fewer runs in the window: no alert.")
    time = forms.CharField(required=False, max_length=5, help_text="Deadlines: local time HH:MM, e.g. 06:00.")
    timezone = forms.CharField(
        required=False,
        max_length=64,
        help_text="Deadlines: IANA zone, e.g. Europe/Berlin.",
        widget=forms.TextInput(attrs={"list": "timezones", "autocomplete": "off"}),
    )
    days = forms.ChoiceField(required=False, choices=[("", "—"), *((d, d) for d in DAYS)], help_text="Deadlines.")

    def definition(self) -> dict:
        data = self.cleaned_data
        definition = {
            "name": data["name"],
            "kind": data["kind"],
            "severity": data["severity"],
            "scope": data["scope"],
            "for_seconds": data["for_seconds"] or 0,
            "enabled": bool(data["enabled"]),
        }
        for field in ("job", "team", "tag", *PARAM_FIELDS):
            value = data.get(field)
            if value not in (None, ""):
                definition[field] = value.strip() if isinstance(value, str) else value
        return definition

    @staticmethod
    def initial_from(definition: dict) -> dict:
        return dict(definition)
