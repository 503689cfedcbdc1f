"""What authorises change control to write a job: the approved change request being applied.

Change requests live in ``approvals``, above this app, so jobs knows them only by this protocol
(``approvals.models.ChangeRequest`` implements it). A job service given an authority checks that it
is an approved request, applying now, to this very job (or, for a create, to this team and
environment of its tenant), for this operation; otherwise it refuses as it would refuse a user
without the role.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from governance.services import AccessDenied

from .models import Job


@runtime_checkable
class ChangeAuthority(Protocol):
    @property
    def pk(self) -> int | None: ...

    @property
    def tenant_id(self) -> int: ...

    @property
    def team_id(self) -> int | None: ...

    @property
    def environment_id(self) -> int | None: ...

    @property
    def job_id(self) -> int | None: ...

    @property
    def action(self) -> str:
        """``create``, ``update``, ``delete``, ``pause`` or ``resume`` for a job change."""
        ...

    def is_applying(self) -> bool:
        """Is this request, as stored, approved and about to be applied?"""
        ...


def check_authority(
    authority: ChangeAuthority,
    *,
    operations: tuple[str, ...],
    tenant_id: int,
    job: Job | None = None,
    team_id: int | None = None,
    environment_id: int | None = None,
) -> int:
    """The request's id when ``authority`` authorises one of ``operations`` on ``job``, or (no job)
    the creation of a job in that team and environment of the tenant; AccessDenied otherwise."""
    if not isinstance(authority, ChangeAuthority) or authority.pk is None:
        raise AccessDenied("Only an approved change request applies a change to a job.")
    if job is not None:
        target = authority.job_id == job.pk and job.tenant_id == tenant_id
    else:
        target = authority.job_id is None and (authority.team_id, authority.environment_id) == (team_id, environment_id)
    if not (authority.action in operations and authority.tenant_id == tenant_id and target) or not (
        authority.is_applying()
    ):
        raise AccessDenied(f"Change request #{authority.pk} does not authorise this change to this job.")
    return authority.pk
