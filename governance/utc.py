"""The one UTC text format of APIs, logs and exports (every app formats instants through it)."""

from __future__ import annotations

from datetime import UTC, datetime


def isoz(instant: datetime) -> str:
    """UTC ISO 8601 with a Z, the one format used in APIs, logs and exports."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
