"""Monitoring: oncall."""

__all__: list[str] = []
