"""Monitoring: incidents."""

__all__: list[str] = []
