"""Who acts: a signed-in user (people, and service accounts through their user) or the system.

Services take a keyword-only ``actor``. Background work (the scheduler, sweeps, management commands,
the demo seed) passes ``SYSTEM`` explicitly: it is the only actor for which a service skips its role
check, so a forgotten ``actor`` is a ``TypeError``, never a silent bypass. ``SYSTEM`` is not an
authenticated user, so every access check (``governance.access``) refuses it and the audit trail
records it as ``system`` with no user, as it always has.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias, TypeGuard, final

from django.contrib.auth.models import AnonymousUser, User


@final
class SystemActor:
    """Governor itself acting on a schedule or on an approved request: one instance, ``SYSTEM``."""

    _instance: SystemActor | None = None

    # Shaped like an anonymous user so generic code ("is there a user?") answers no.
    is_authenticated: Final[Literal[False]] = False
    is_anonymous: Final[Literal[False]] = False
    is_active: Final[Literal[False]] = False
    is_superuser: Final[Literal[False]] = False
    pk: Final[None] = None

    def __new__(cls) -> SystemActor:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def get_username(self) -> str:
        return "system"

    def __str__(self) -> str:
        return "system"

    def __repr__(self) -> str:
        return "SYSTEM"

    def __reduce__(self) -> str:
        # Pickled (django-q2 task arguments) and unpickled as the same singleton.
        return "SYSTEM"


SYSTEM: Final = SystemActor()

# Who may call a service.
Actor: TypeAlias = "User | SystemActor"
# Whom an access check may be asked about: anyone a request or a task can carry.
Subject: TypeAlias = "User | AnonymousUser | SystemActor"


def is_system(actor: object) -> TypeGuard[SystemActor]:
    return actor is SYSTEM


def require_actor(actor: object) -> Actor:
    """The actor a service was given, or TypeError: a missing actor (None, an anonymous user) never
    stands for the system."""
    if actor is SYSTEM:
        return SYSTEM
    if isinstance(actor, User):
        return actor
    raise TypeError(f"A service needs an actor (a user, or governance.actors.SYSTEM), not {actor!r}.")


def user_of(actor: object) -> User | None:
    """The signed-in user who acted (named in history rows and foreign keys), or None for the system."""
    return actor if isinstance(actor, User) and actor.is_authenticated else None
