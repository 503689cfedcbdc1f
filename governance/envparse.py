"""Values read from the environment that the settings validate and the code then re-reads.

Imports nothing from Django or the apps: ``governor/settings.py`` calls it before any app loads.
"""

from __future__ import annotations


def parse_uid_range(text: str) -> tuple[int, int]:
    """``first-last``: uids above the system and usual subuid ranges, at least one of them."""
    try:
        first_text, last_text = text.split("-")
        first, last = int(first_text), int(last_text)
    except ValueError:
        raise ValueError(f"must be <first>-<last> (two uids), not {text!r}") from None
    if not 1000 <= first <= last <= 0xFFFFFFFE - 1:
        raise ValueError(f"must satisfy 1000 <= first <= last < 4294967294, not {text!r}")
    return first, last
