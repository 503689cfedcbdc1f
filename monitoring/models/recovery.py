"""Monitoring: recovery."""

__all__: list[str] = []
