"""Small forms for operator actions on jobs and runs."""

from django import forms


class ReasonForm(forms.Form):
    """Why an operator triggers, pauses, resumes, cancels, reruns or settles: always required,
    recorded with the action in the run or job history and the audit trail."""

    reason = forms.CharField(
        max_length=1000,
        widget=forms.TextInput(attrs={"placeholder": "Why?"}),
        error_messages={"required": "Give a reason: it is recorded in the audit trail."},
    )

    def clean_reason(self) -> str:
        return self.cleaned_data["reason"].strip()
