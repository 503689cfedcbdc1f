"""A partial index for the executor's downstream lookup (``jobs.hotpath.downstream_candidates``).

When a run finishes, the jobs of its environment whose dependencies name it are looked up.
Most jobs have no dependencies at all: indexing only the jobs that have some keeps that
lookup proportional to the jobs with edges, not to every job of the environment (it scanned
2,000 rows per finished run in bench/). The predicate is written out, not built by the ORM,
so that the lookup's own SQL repeats it word for word: SQLite uses a partial index only for a
query that contains the index's condition, and PostgreSQL proves it the same way.
"""

from django.db import migrations

INDEX = "job_downstream_lookup"
CONDITION = "\"dependencies\" <> '[]'"


class Migration(migrations.Migration):
    dependencies = [("jobs", "0010_windows_calendars_pools_history")]

    operations = [
        migrations.RunSQL(
            sql=f'CREATE INDEX "{INDEX}" ON "jobs_job" ("tenant_id", "environment_id") WHERE {CONDITION}',
            reverse_sql=f'DROP INDEX "{INDEX}"',
        )
    ]
