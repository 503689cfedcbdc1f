"""Shared arguments and output of the plan and apply commands (not a command itself)."""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError

from manifests.plan import Plan


class _ShellOperator:
    """Whoever runs manage.py at the server's shell already has the database: they see every tenant."""

    is_authenticated = True
    is_active = True
    is_superuser = True
    pk = None


SHELL_OPERATOR = _ShellOperator()


def add_common(parser, *, actor_required: bool) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="Manifest files or directories.")
    parser.add_argument(
        "--actor",
        required=actor_required,
        help="Username the changes are made as (its roles apply)."
        + ("" if actor_required else " Default: a superuser view of everything."),
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="Also delete live jobs of the teams covered by the manifests that no manifest lists.",
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object for machines.")


def actor_named(username: str | None):
    if username is None:
        return None
    try:
        return get_user_model().objects.get(username=username, is_active=True)
    except get_user_model().DoesNotExist:
        raise CommandError(f"No active user named {username!r}.") from None


def _value(value) -> str:
    return json.dumps(value, ensure_ascii=False)


SYMBOL = {"create": "+", "update": "~", "delete": "-", "pending": "=", "unchanged": " "}


def render(plan: Plan) -> list[str]:
    lines = [str(p) for p in plan.problems]
    for change in plan.changes:
        if change.action == "unchanged":
            continue
        where = f"{change.tenant}/{change.environment.slug}"
        if change.action == "pending":
            cr = change.change_request
            assert cr is not None  # a pending change names its request
            lines.append(f"= {change.name} in {where}: change request CR-{cr.pk} already proposes this ({cr.status})")
            continue
        review = " (governed: opens a change request)" if change.governed else ""
        lines.append(f"{SYMBOL[change.action]} {change.action} {change.name} in {where}{review}")
        for row in change.diff:
            if change.action == "create":
                lines.append(f"    {row['field']}: {_value(row['after'])}")
            elif change.action == "delete":
                continue
            else:
                lines.append(f"    {row['field']}: {_value(row['before'])} -> {_value(row['after'])}")
    return lines
