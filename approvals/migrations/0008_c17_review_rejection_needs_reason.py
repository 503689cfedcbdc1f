"""A rejected request carries its reason (a migration of its own: the backfill before it commits first)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0007_c17_review_rejection_reason"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="changerequest",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status", "rejected"), _negated=True),
                    models.Q(("rejection_reason", ""), _negated=True),
                    _connector="OR",
                ),
                name="change_rejection_needs_reason",
                violation_error_message="A rejection needs a reason.",
            ),
        ),
    ]
