"""Retry policy: which failures are transient, and how long to wait before the next attempt.

Backoff is exponential with full jitter (a uniform draw between zero and
``min(cap, base * 2 ** (attempt - 1))``), so many runs failing together do not
retry together. A server's ``Retry-After`` is a floor, never shortened.
"""

from __future__ import annotations

import random

from .execution_spec import RETRY_DEFAULTS

MAX_RETRY_AFTER_SECONDS = 24 * 3600


def policy(definition: dict) -> dict:
    return {**RETRY_DEFAULTS, **(definition.get("retry") or {})}


def backoff_delay(retry: dict, attempt: int, *, retry_after: float | None = None, rng=random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    base = float(retry.get("backoff_seconds", RETRY_DEFAULTS["backoff_seconds"]))
    cap = float(retry.get("backoff_cap_seconds", RETRY_DEFAULTS["backoff_cap_seconds"]))
    delay = rng.uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
    return delay


def is_transient_exit(definition: dict, exit_code: int | None) -> bool:
    return exit_code is not None and exit_code in policy(definition)["transient_exit_codes"]


def attempts_left(definition: dict, attempt: int) -> bool:
    return attempt < policy(definition)["max_attempts"]
