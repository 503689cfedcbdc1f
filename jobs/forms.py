"""Small forms for operator actions on jobs and runs."""

from django import forms


class ReasonForm(forms.Form):
    """A free-text reason; required for pausing and cancelling, optional for a manual trigger."""

    reason = forms.CharField(max_length=1000, widget=forms.TextInput(attrs={"placeholder": "Why?"}))

    def __init__(self, *args, required: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["reason"].required = required
        if required:
            self.fields["reason"].error_messages["required"] = "Give a reason: it is recorded in the audit trail."

    def clean_reason(self) -> str:
        return self.cleaned_data["reason"].strip()
