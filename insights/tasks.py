"""Periodic Insights work, run by the django-q2 cluster (registered by ``manage.py register_schedules``)."""

from __future__ import annotations

from .forecast import refresh


def refresh_all() -> int:
    """Recompute every tenant's forecasts and herds (nightly); returns how many results were stored."""
    return len(refresh())
