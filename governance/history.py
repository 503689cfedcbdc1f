"""Saving a row with its history entry (django-simple-history) naming who changed it and why.

Every governed write stamps the history row the same way: the reason (simple-history keeps 100
characters; the audit event beside it keeps the whole text) and the user who acted (none when the
system acted). The caller still writes its audit event in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Model

from .actors import Actor, user_of

REASON_LENGTH = 100


def history_reason(text: str) -> str:
    """``text`` as a history row keeps it: cut to 100 characters, marked with an ellipsis when cut."""
    return text if len(text) <= REASON_LENGTH else text[: REASON_LENGTH - 1] + "…"


def stamp_history(obj: Model, *, actor: Actor, reason: str | None) -> None:
    """Name ``actor`` (unless it is the system) and ``reason`` in the history row of ``obj``'s next
    save or delete."""
    if reason is not None:
        obj._change_reason = history_reason(reason)  # type: ignore[attr-defined]
    obj._history_user = user_of(actor)  # type: ignore[attr-defined]


def save_with_history(
    obj: Model, *, actor: Actor, reason: str | None, update_fields: Iterable[str] | None = None
) -> None:
    """Save ``obj``; its history row names ``actor`` (unless it is the system) and ``reason``."""
    stamp_history(obj, actor=actor, reason=reason)
    obj.save(update_fields=update_fields)


def delete_with_history(obj: Model, *, actor: Actor, reason: str | None) -> None:
    """Delete ``obj``; the history keeps it, its last row naming ``actor`` and ``reason``."""
    stamp_history(obj, actor=actor, reason=reason)
    obj.delete()
