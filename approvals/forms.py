"""The proposal forms: a new job, a change to a live job, a deletion."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError

from governance.access import Action, restrict
from governance.models import Environment, Team
from jobs.models import DEFINITION_FIELDS, CatchupPolicy, Criticality, GapPolicy, OverlapPolicy


class DataOptionsSelect(forms.Select):
    """A select whose options carry ``data-*`` attributes of their object, for the form's hints
    (the name prefix of a team, whether an environment is governed)."""

    def __init__(self, data_of, attrs=None):
        super().__init__(attrs)
        self.data_of = data_of

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex=subindex, attrs=attrs)
        instance = getattr(value, "instance", None)
        if instance is not None:
            option["attrs"].update(self.data_of(instance))
        return option


def name_prefix(team: Team) -> str:
    """What every job name of ``team`` starts with (jobs.definitions refuses any other)."""
    return f"{team.slug}."


class TeamChoice(forms.ModelChoiceField):
    widget = DataOptionsSelect(lambda team: {"data-prefix": name_prefix(team)})

    def label_from_instance(self, obj):
        return f"{obj.name} ({obj.tenant.slug})"


class EnvironmentChoice(forms.ModelChoiceField):
    widget = DataOptionsSelect(
        lambda env: {"data-governed": "1" if env.governed else "0", "data-approvals": str(env.required_approvals)}
    )

    def label_from_instance(self, obj):
        needed = obj.required_approvals
        policy = f"{needed} approval{'s' if needed != 1 else ''}" if needed else "applies at once"
        return f"{obj.name} ({obj.tenant.slug}) — {policy}"


def add_service_errors(form: forms.Form, exc: ValidationError, rename: dict | None = None) -> None:
    """Show a service's field errors beside the form fields they name, the rest above the form.
    ``rename`` maps a service's field name to the form's (None: above the form)."""
    for field, messages in exc.message_dict.items():
        name = (rename or {}).get(field, field)
        form.add_error(name if name in form.fields else None, messages)


class JustifiedForm(forms.Form):
    """Justification and ticket: what every change request carries."""

    # Service field names this form shows under another name (see add_service_errors).
    service_field_names: dict[str, str | None] = {}

    justification = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Why is this change needed? Reviewers read this."}),
        max_length=5000,
        error_messages={"required": "A justification is required: say why this change is needed."},
    )
    ticket = forms.CharField(
        required=False, max_length=200, widget=forms.TextInput(attrs={"placeholder": "e.g. OPS-1234"})
    )

    def add_service_errors(self, exc: ValidationError) -> None:
        add_service_errors(self, exc, self.service_field_names)


class ProposalForm(JustifiedForm):
    """A job or configuration proposal: may also wait for a release instant or be an emergency."""

    apply_after = forms.DateTimeField(
        required=False,
        label="Apply after (UTC)",
        help_text="Optional: once approved, the change waits until this instant (release alignment).",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    emergency = forms.BooleanField(
        required=False,
        label="Emergency change",
        help_text="May apply during a freeze window; then it needs a review after the fact.",
    )

    def proposal(self) -> dict[str, Any]:
        """What every proposing service takes from this form (after is_valid)."""
        data = self.cleaned_data
        return {
            "justification": data["justification"],
            "ticket": data["ticket"],
            "emergency": data.get("emergency", False),
            "apply_after": data.get("apply_after"),
        }


class PauseProposalForm(ProposalForm):
    """Propose pausing (or resuming) a job whose policy puts that under change control."""

    def __init__(self, *args, paused: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["justification"].widget.attrs["placeholder"] = (
            f"Why should this job be {'paused' if paused else 'resumed'}? Approvers read this."
        )
        if paused:
            self.fields["emergency"].label = "Emergency pause"
            self.fields[
                "emergency"
            ].help_text = (
                "Pause at once, before approval (e.g. the job is doing damage); approvers review it after the fact."
            )
        else:
            # Resuming is never urgent enough to skip review.
            del self.fields["emergency"]


class JobDefinitionForm(ProposalForm):
    """A job's definition. With ``job`` given it proposes an update (team and environment stay)."""

    field_order = [
        "team",
        "environment",
        "name",
        "description",
        "criticality",
        "tags",
        "command",
        "cron",
        "timezone",
        "timeout_seconds",
        "runbook",
        "gap",
        "overlap",
        "catchup",
        "catchup_limit",
        "starting_deadline_seconds",
        "rationale",
        "sunset_on",
        "justification",
        "ticket",
        "apply_after",
        "emergency",
    ]

    team = TeamChoice(queryset=Team.objects.none(), empty_label="Choose the owning team")
    environment = EnvironmentChoice(queryset=Environment.objects.none(), empty_label="Choose the environment")
    name = forms.CharField(
        max_length=200,
        help_text="<team>.<system>.<job>, lower-case letters, digits and dashes.",
        widget=forms.TextInput(attrs={"placeholder": "payments.ledger.reconcile", "autocomplete": "off"}),
    )
    description = forms.CharField(required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 2}))
    runbook = forms.CharField(
        required=False,
        max_length=50000,
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": "What to do when this job fails (markdown)."}),
    )
    criticality = forms.ChoiceField(choices=Criticality.choices, initial=Criticality.MEDIUM)
    tags = forms.CharField(
        required=False,
        max_length=1100,
        help_text="Slugs separated by commas or spaces, e.g. 'payments, nightly'; alert rules can apply by tag.",
        widget=forms.TextInput(attrs={"placeholder": "payments, nightly", "autocomplete": "off"}),
    )
    command = forms.CharField(
        help_text="One argv item per line; the first line is the program. No shell is involved.",
        widget=forms.Textarea(
            attrs={"rows": 3, "class": "mono", "placeholder": "/usr/local/bin/reconcile\n--day\nyesterday"}
        ),
    )
    cron = forms.CharField(
        max_length=120,
        help_text="5 fields: minute hour day-of-month month day-of-week.",
        widget=forms.TextInput(attrs={"class": "mono", "placeholder": "30 2 * * *"}),
    )
    timezone = forms.CharField(
        label="Time zone",
        max_length=64,
        initial="UTC",
        help_text="IANA name; the cron is evaluated on this wall clock.",
        widget=forms.TextInput(attrs={"list": "timezones", "autocomplete": "off"}),
    )
    timeout_seconds = forms.IntegerField(
        min_value=1, initial=3600, label="Timeout (seconds)", help_text="The whole process group is killed after this."
    )

    gap = forms.ChoiceField(
        label="When a DST change skips the time",
        choices=GapPolicy.choices,
        initial=GapPolicy.SHIFT,
        help_text="Fixed-hour schedules only; '*' hours follow elapsed time.",
    )
    overlap = forms.ChoiceField(
        label="When a DST change repeats the time", choices=OverlapPolicy.choices, initial=OverlapPolicy.ONCE
    )
    catchup = forms.ChoiceField(
        label="Missed runs",
        choices=CatchupPolicy.choices,
        initial=CatchupPolicy.SKIP,
        help_text="After the scheduler was down or the job paused; missed slots are always recorded.",
    )
    catchup_limit = forms.IntegerField(label="Catch-up limit (slots)", min_value=1, initial=10)
    starting_deadline_seconds = forms.IntegerField(
        label="Starting deadline (seconds)",
        min_value=1,
        required=False,
        help_text="A slot later than this is skipped, not run. Empty: no deadline.",
    )

    rationale = forms.CharField(
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required when the job is non-standard: runs more often than every 5 minutes, fires in a "
        "daylight-saving transition hour, allows overlapping runs, has no timeout, or is critical without a heartbeat.",
    )
    sunset_on = forms.DateField(
        required=False,
        label="Sunset date (deprecation)",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="The job is disabled from this day (UTC); its owners are warned before. Empty: not deprecated.",
    )

    def __init__(self, *args, user, job=None, fixed_place: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.job = job
        if job is not None or fixed_place:
            del self.fields["team"]
            del self.fields["environment"]
        else:
            cast(forms.ModelChoiceField, self.fields["team"]).queryset = restrict(
                Team.objects.select_related("tenant"), user, Action.PROPOSE
            )
            cast(forms.ModelChoiceField, self.fields["environment"]).queryset = restrict(
                Environment.objects.select_related("tenant"), user, Action.PROPOSE
            )

    def clean_command(self) -> list[str]:
        # Blank lines are layout, not empty arguments.
        lines = [line.rstrip("\r") for line in self.cleaned_data["command"].split("\n")]
        argv = [line for line in lines if line.strip()]
        if not argv:
            raise ValidationError("Give at least the program to run.")
        return argv

    def clean_tags(self) -> list[str]:
        return [tag for tag in self.cleaned_data["tags"].replace(",", " ").split() if tag]

    def definition(self) -> dict:
        data = self.cleaned_data
        return {
            "name": data["name"].strip(),
            "description": data["description"],
            "runbook": data["runbook"],
            "criticality": data["criticality"],
            "tags": data["tags"],
            "command": data["command"],
            "cron": data["cron"],
            "timezone": data["timezone"].strip(),
            "timeout_seconds": data["timeout_seconds"],
            "gap": data["gap"],
            "overlap": data["overlap"],
            "catchup": data["catchup"],
            "catchup_limit": data["catchup_limit"],
            "starting_deadline_seconds": data["starting_deadline_seconds"],
            "rationale": data["rationale"],
            "sunset_on": data["sunset_on"].isoformat() if data["sunset_on"] else None,
        }

    @staticmethod
    def initial_from_definition(definition: dict) -> dict:
        initial = {field: definition.get(field) for field in DEFINITION_FIELDS if field in definition}
        initial["command"] = "\n".join(definition.get("command") or [])
        initial["tags"] = ", ".join(definition.get("tags") or [])
        return initial

    @staticmethod
    def initial_from(job) -> dict:
        """Initial values from a live job or one of its historical records."""
        initial = {field: getattr(job, field, None) for field in DEFINITION_FIELDS}
        initial["command"] = "\n".join(job.command or [])
        initial["tags"] = ", ".join(getattr(job, "tags", None) or [])
        return initial


class ReviewForm(forms.Form):
    # The revision the reviewer read: a decision on a request edited since is refused (409).
    revision = forms.IntegerField(
        widget=forms.HiddenInput,
        min_value=1,
        error_messages={
            "required": "The form did not say which revision you reviewed; reload the page and decide again.",
            "invalid": "The revision you reviewed must be a whole number; reload the page and decide again.",
        },
    )
    comment = forms.CharField(
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Comment (recorded with your decision)"}),
    )


class RejectForm(forms.Form):
    """The confirmation step of a rejection: the reason is required and shown to the author."""

    revision = ReviewForm.base_fields["revision"]
    reason = forms.CharField(
        label="Why you reject it",
        max_length=5000,
        help_text="The author reads this on the request and may revise and resubmit.",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "What must change before you would approve?"}),
        error_messages={"required": "Say why you reject this change: its author reads the reason."},
    )

    def __init__(self, *args, **kwargs):
        # Beside the approval form on one page: ids of its own (reject_revision, reject_reason).
        kwargs.setdefault("auto_id", "reject_%s")
        super().__init__(*args, **kwargs)


class ResubmitForm(forms.Form):
    """Resubmit a rejected request whose proposal has no form here (policy, state and configuration
    changes): a new justification, the same proposal."""

    justification = forms.CharField(
        label="What changed since the rejection",
        max_length=10000,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": "A justification is required: say why this change is needed."},
    )


class CommentForm(forms.Form):
    body = forms.CharField(
        label="Comment",
        max_length=10000,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Ask a question or note something; not a decision."}),
        error_messages={"required": "Write a comment."},
    )


class PostReviewForm(forms.Form):
    notes = forms.CharField(
        label="What the review found",
        max_length=10000,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": "Record what the review found."},
    )
