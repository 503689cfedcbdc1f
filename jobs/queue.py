"""Handing runs to the workers (django-q2)."""


def enqueue_run(run_id: int) -> None:
    """Hand a run to django-q2 (called on commit, so the worker always finds the row)."""
    from django_q.tasks import async_task

    async_task("jobs.tasks.execute_run", run_id, task_name=f"run-{run_id}", save=False)
