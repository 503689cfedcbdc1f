"""Forms of the change-control pages around the review flow: approval policies, freeze windows,
rollback, promotion and recertification. They check shape only; the services decide."""

from __future__ import annotations

from typing import cast

from django import forms

from governance.access import Action, restrict, tenant_ids
from governance.models import Environment, Tenant
from jobs.execution_spec import parameter_value_errors
from jobs.models import Criticality

from .forms import EnvironmentChoice, JustifiedForm
from .policies import MAX_REQUIRED_APPROVALS


class RollbackForm(JustifiedForm):
    """Propose an earlier version again."""


class PolicyChangeForm(JustifiedForm):
    field_order = ["environment", "criticality", "required_approvals", "separation_of_duties", "pause_requires_change"]

    environment = EnvironmentChoice(queryset=Environment.objects.none(), empty_label="Choose the environment")
    criticality = forms.ChoiceField(
        choices=[("", "Default (every criticality without its own rule)"), *Criticality.choices],
        required=False,
        help_text="A rule for one criticality overrides the environment's default for those jobs.",
    )
    required_approvals = forms.IntegerField(
        min_value=0,
        max_value=MAX_REQUIRED_APPROVALS,
        help_text="Distinct approvers a change needs; never its author. 0: changes apply at once.",
    )
    separation_of_duties = forms.BooleanField(
        required=False,
        label="Independent approver",
        help_text="At least one approver must come from a team other than the job's owning team.",
    )
    pause_requires_change = forms.BooleanField(
        required=False,
        label="Pause and resume through change requests",
        help_text="Operators propose pausing or resuming these jobs; approvers approve it like an update.",
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["environment"].queryset = restrict(
            Environment.objects.select_related("tenant"), user, Action.ADMINISTER
        ).order_by("tenant__slug", "order", "slug")

    def rule(self) -> dict:
        data = self.cleaned_data
        return {
            "criticality": data["criticality"] or "",
            "required_approvals": data["required_approvals"],
            "separation_of_duties": bool(data["separation_of_duties"]),
            "pause_requires_change": bool(data["pause_requires_change"]),
        }


class FreezeForm(forms.Form):
    """A freeze of one environment or of a whole tenant; the choices are where the user administers."""

    scope = forms.ChoiceField(label="Frozen", help_text="One environment, or every environment of a tenant.")
    starts_at = forms.DateTimeField(
        label="Starts (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
    )
    ends_at = forms.DateTimeField(
        label="Ends (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
    )
    reason = forms.CharField(
        max_length=300,
        widget=forms.TextInput(attrs={"placeholder": "e.g. Black Friday release freeze"}),
        error_messages={"required": "Say why changes are frozen (e.g. the release or event)."},
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        admin_tenants = Tenant.objects.all()
        if not user.is_superuser:
            admin_tenants = admin_tenants.filter(pk__in=tenant_ids(user, Action.ADMINISTER))
        self.tenants = {t.pk: t for t in admin_tenants.order_by("slug")}
        self.environments = {
            e.pk: e
            for e in restrict(Environment.objects.select_related("tenant"), user, Action.ADMINISTER).order_by(
                "tenant__slug", "order", "slug"
            )
        }
        choices = []
        for tenant in self.tenants.values():
            choices.append((f"tenant:{tenant.pk}", f"All environments of {tenant.name}"))
        for env in self.environments.values():
            choices.append((f"env:{env.pk}", f"{env.name} ({env.tenant.slug})"))
        self.fields["scope"].choices = choices

    @property
    def offered(self) -> bool:
        return bool(cast(forms.ChoiceField, self.fields["scope"]).choices)

    def place(self) -> tuple[Tenant, Environment | None]:
        kind, _, pk = self.cleaned_data["scope"].partition(":")
        if kind == "env":
            env = self.environments[int(pk)]
            return env.tenant, env
        return self.tenants[int(pk)], None


class RecertifyForm(forms.Form):
    note = forms.CharField(
        max_length=2000,
        widget=forms.TextInput(attrs={"placeholder": "What you checked: owner, runbook, schedule still right"}),
        error_messages={"required": "Say what you checked (owner, runbook, schedule still right)."},
    )


def _parameter_field(name: str, spec: dict, required: bool) -> forms.Field:
    label = spec.get("title") or name
    help_text = spec.get("description", "")
    kind = spec.get("type")
    if "enum" in spec:
        choices = [("", "—")] if not required else []
        return forms.TypedChoiceField(
            label=label,
            required=required,
            choices=[*choices, *((str(v), str(v)) for v in spec["enum"])],
            coerce=lambda text, options=tuple(spec["enum"]): next((v for v in options if str(v) == text), text),
            empty_value=None,
            help_text=help_text,
        )
    if kind == "boolean":
        return forms.TypedChoiceField(
            label=label,
            required=required,
            choices=[("", "—"), ("true", "true"), ("false", "false")],
            coerce=lambda text: text == "true",
            empty_value=None,
            help_text=help_text,
        )
    if kind == "integer":
        return forms.IntegerField(label=label, required=required, help_text=help_text)
    if kind == "number":
        return forms.FloatField(label=label, required=required, help_text=help_text)
    return forms.CharField(label=label, required=required, help_text=help_text, max_length=4096, strip=False)


class PromotionForm(JustifiedForm):
    """The target environment's parameter values, one field per declared parameter, checked against
    the job's parameter schema before anything is proposed."""

    PREFIX = "param_"

    def __init__(self, *args, schema: dict | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.schema = schema or {}
        required = set(self.schema.get("required") or [])
        self.parameter_names = list((self.schema.get("properties") or {}).keys())
        fields = {}
        for name in self.parameter_names:
            spec = self.schema["properties"][name]
            # A default fills a missing value, so the field itself may stay empty.
            fields[self.PREFIX + name] = _parameter_field(name, spec, name in required and "default" not in spec)
        self.fields = {**fields, **self.fields}

    @property
    def parameter_fields(self):
        return [self[self.PREFIX + name] for name in self.parameter_names]

    def clean(self):
        data = super().clean()
        if self.parameter_names:
            for name, messages in parameter_value_errors(self.schema, self.values()).items():
                field = self.PREFIX + name if name in self.parameter_names else None
                if field not in self.errors:
                    # A field already refused by its type says so once, not twice.
                    self.add_error(field, messages)
        return data

    def values(self) -> dict | None:
        """The values to promote with (None: the job declares no parameters)."""
        if not self.parameter_names:
            return None
        values = {}
        for name in self.parameter_names:
            value = self.cleaned_data.get(self.PREFIX + name)
            if value not in (None, ""):
                values[name] = value
        return values

    def add_promotion_errors(self, exc, target_slug: str) -> None:
        """Put the service's messages beside the parameter they name ("values.<env>: <name>: ...")."""
        for field, messages in exc.message_dict.items():
            for message in messages:
                prefix = f"values.{target_slug}: "
                name = message[len(prefix) :].split(":", 1)[0] if message.startswith(prefix) else ""
                if field == "parameters" and name in self.parameter_names:
                    self.add_error(self.PREFIX + name, message[len(prefix) + len(name) + 1 :].strip())
                elif field in self.fields:
                    self.add_error(field, message)
                else:
                    self.add_error(None, f"{field}: {message}" if field not in ("__all__", "") else message)
