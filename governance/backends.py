"""``user.has_perm(perm, obj)`` answered by ``governance.access``, so Django's own checks agree with it.

Roles are django-guardian object permissions (``governance.role_<role>``) on ``Scope`` rows, and a
role on a scope reaches every job, run, change request, team or environment inside it. Guardian's
checker only sees permissions attached to the object asked about, and queries for each object, so
it cannot answer for a job. This backend answers for every object whose model names its
``ACCESS_FIELDS`` by delegating to ``access.can``, which reads the same guardian rows once per user
(cached on the user, or for many users at once with ``access.prime_grants``): checking a page of
rows costs no query per row. ``access.py`` stays the one place that decides.

The permissions are ``<app_label>.<action>_<model_name>`` for each ``access.Action``: ``jobs.view_job``
(Django's own view permission), ``jobs.trigger_job``, ``approvals.review_changerequest``,
``governance.administer_team``... For those objects any other permission (Django's ``add``,
``change``, ``delete``) is refused outright: writes go through services and change control, never
through a model permission. Role permissions on a ``Scope`` (``governance.role_viewer``) stay with
guardian's ``ObjectPermissionBackend``, next in ``AUTHENTICATION_BACKENDS``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import BaseBackend
from django.core.exceptions import PermissionDenied
from django.db.models import Model

from . import access
from .access import Action


def permission_name(action: Action | str, obj: Model | type[Model]) -> str:
    """``"jobs.trigger_job"``: the permission string for ``action`` on ``obj``'s model."""
    opts = obj._meta
    return f"{opts.app_label}.{Action(action)}_{opts.model_name}"


def _action(perm: str, obj: Model) -> Action | None:
    app_label, _, codename = perm.partition(".")
    verb, _, model_name = codename.rpartition("_")
    if app_label != obj._meta.app_label or model_name != obj._meta.model_name:
        return None
    try:
        return Action(verb)
    except ValueError:
        return None


class AccessBackend(BaseBackend):
    """Object permissions of tenant-owned models (those with ``ACCESS_FIELDS``), from ``governance.access``."""

    def has_perm(self, user_obj: Any, perm: str, obj: Model | None = None) -> bool:
        if obj is None or not hasattr(obj, "ACCESS_FIELDS"):
            return False  # model-level permissions and scopes: the other backends
        action = _action(perm, obj)
        if action is not None and access.can(user_obj, action, obj):
            return True
        # Authoritative for these objects: no later backend may grant it (nor query for it).
        raise PermissionDenied

    def get_all_permissions(self, user_obj: Any, obj: Model | None = None) -> set[str]:
        if obj is None or not hasattr(obj, "ACCESS_FIELDS"):
            return set()
        return {permission_name(action, obj) for action in Action if access.can(user_obj, action, obj)}
