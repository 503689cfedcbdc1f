"""The downstream-lookup index of 0011, declared on the model: its condition is the model's
``HAS_DEPENDENCIES``, which the lookup's ORM query contains as well (jobs.workflows)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("jobs", "0014_alert_kind_sandbox_unavailable")]

    operations = [
        migrations.RunSQL(
            sql='DROP INDEX "job_downstream_lookup"',
            reverse_sql="CREATE INDEX \"job_downstream_lookup\" ON \"jobs_job\" (\"tenant_id\", \"environment_id\") WHERE \"dependencies\" <> '[]'",
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("dependencies", []), _negated=True),
                fields=["tenant", "environment"],
                name="job_downstream_lookup",
            ),
        ),
    ]
