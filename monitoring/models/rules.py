"""Monitoring: rules."""

__all__: list[str] = []
