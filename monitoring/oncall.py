"""Who is on call for a team at an instant, and when that changes.

A rotation has layers; in each layer the members take turns: the k-th shift starts at the k-th
handoff, ``starts_on + k * rotation_days`` at ``handoff_time`` on the wall clock of the layer's zone,
so a handoff stays at 09:00 local across daylight-saving changes (the shift around the change is an
hour shorter or longer). A handoff time the spring change skips happens as much later as the clock
jumped (02:30 -> 03:30); one that occurs twice happens at its first occurrence. A layer limited to
some weekdays covers only instants whose local weekday is one of them. An override covering the
instant wins over every layer (the newest one when several do); otherwise the highest layer with
someone on call does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from jobs import schedule

from .models import Override, Rotation, RotationLayer

# next_handoff looks this far ahead at most (a one-person rotation never hands off).
HORIZON = dt.timedelta(days=400)
MAX_STEPS = 200


@dataclass(frozen=True)
class Handoff:
    at: dt.datetime
    user: Any  # the User on call from ``at`` (None: nobody)


def handoff_at(layer: RotationLayer, k: int) -> dt.datetime:
    """The k-th handoff of a layer, in UTC."""
    zone = schedule.zone(layer.timezone)
    day = layer.starts_on + dt.timedelta(days=k * layer.rotation_days)
    return dt.datetime.combine(day, layer.handoff_time, tzinfo=zone).astimezone(UTC)


def shift_of(layer: RotationLayer, at: dt.datetime) -> int | None:
    """The number of the shift of ``layer`` running at ``at`` (None: before the layer starts)."""
    zone = schedule.zone(layer.timezone)
    local_day = at.astimezone(zone).date()
    k = (local_day - layer.starts_on).days // layer.rotation_days
    while k >= 0 and handoff_at(layer, k) > at:
        k -= 1
    if k < 0:
        return None
    while handoff_at(layer, k + 1) <= at:
        k += 1
    return k


def _members(layer: RotationLayer) -> list[Any]:
    return [member.user for member in layer.members.all()]


def layer_user(layer: RotationLayer, at: dt.datetime) -> Any:
    members = _members(layer)
    if not members:
        return None
    if layer.weekdays and at.astimezone(schedule.zone(layer.timezone)).weekday() not in layer.weekdays:
        return None
    k = shift_of(layer, at)
    return None if k is None else members[k % len(members)]


def _on_call(layers: Sequence[RotationLayer], overrides: Sequence[Override], at: dt.datetime) -> Any:
    covering = [o for o in overrides if o.starts_at <= at < o.ends_at]
    if covering:
        return max(covering, key=lambda o: o.pk).user
    for layer in sorted(layers, key=lambda item: -item.position):
        user = layer_user(layer, at)
        if user is not None:
            return user
    return None


def _changes_after(
    layers: Sequence[RotationLayer], overrides: Sequence[Override], at: dt.datetime
) -> dt.datetime | None:
    """The first instant after ``at`` at which the answer may change."""
    found: list[dt.datetime] = []
    for layer in layers:
        k = shift_of(layer, at)
        found.append(handoff_at(layer, 0 if k is None else k + 1))
        if layer.weekdays:
            zone = schedule.zone(layer.timezone)
            midnight = dt.datetime.combine(at.astimezone(zone).date() + dt.timedelta(days=1), dt.time(), tzinfo=zone)
            found.append(midnight.astimezone(UTC))
    for override in overrides:
        found.extend(edge for edge in (override.starts_at, override.ends_at) if edge > at)
    later = [instant for instant in found if instant > at]
    return min(later) if later else None


@dataclass
class OnCall:
    """A rotation loaded once (layers, members and overrides), asked about many instants."""

    rotation: Rotation | None
    layers: list[RotationLayer]
    overrides: list[Override]

    def at(self, instant: dt.datetime) -> Any:
        return _on_call(self.layers, self.overrides, instant)

    def next_handoff(self, instant: dt.datetime) -> Handoff | None:
        """The next instant after ``instant`` at which someone else is on call, and who."""
        current = self.at(instant)
        t = instant
        for _ in range(MAX_STEPS):
            following = _changes_after(self.layers, self.overrides, t)
            if following is None or following > instant + HORIZON:
                return None
            user = self.at(following)
            if user != current:
                return Handoff(following, user)
            t = following
        return None


def load(team: Any, *, since: dt.datetime | None = None) -> OnCall:
    """The team's rotation with its layers, members and overrides (four queries; overrides ended
    before ``since`` are left out)."""
    rotation = Rotation.objects.filter(team=team).first()
    if rotation is None:
        return OnCall(None, [], [])
    layers = list(rotation.layers.prefetch_related("members__user").order_by("position"))
    overrides = Override.objects.filter(rotation=rotation).select_related("user")
    if since is not None:
        overrides = overrides.filter(ends_at__gt=since)
    return OnCall(rotation, layers, list(overrides))


def who_is_on_call(team: Any, at: dt.datetime) -> Any:
    """The user on call for ``team`` at ``at``, or None (no rotation, nobody scheduled)."""
    return load(team, since=at).at(at)


def next_handoff(team: Any, at: dt.datetime) -> Handoff | None:
    return load(team, since=at).next_handoff(at)
