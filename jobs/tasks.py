"""django-q2 task entry points: they receive primary keys only."""

from . import executor


def execute_run(run_id: int) -> str:
    return executor.execute_run(run_id)
