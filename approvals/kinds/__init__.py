"""The kinds of change request, one object each, in one registry.

``kind_of(change)`` answers which ``ChangeKind`` (``approvals.kinds.base``) a request is: its
``target_kind`` decides (job, policy, or a configuration object), except that a job's pause and
resume (``STATE_ACTIONS``) are a kind of their own (key ``job_state``).

    job                 kinds.job.JOB          create, update, delete a job's definition
    job_state           kinds.job.JOB_STATE    pause, resume a job (policy pause_requires_change)
    policy              kinds.policy.POLICY    an environment's approval rule
    maintenance_window  kinds.config           one ``ConfigKind`` for each entry of
    holiday_calendar    kinds.config           ``approvals.config_changes.KINDS`` (its spec: model,
    pool                kinds.config           place, validation, writes); a new configuration
    recovery_rule       kinds.config           kind is one entry there
    alert_rule          kinds.config           (a job's alert rule lives in its job's environment)
"""

from __future__ import annotations

from ..config_changes import KINDS as CONFIG_SPECS
from ..errors import ChangeError
from ..models import STATE_ACTIONS, ChangeRequest, TargetKind
from .base import ChangeKind
from .config import ConfigKind
from .job import JOB, JOB_STATE
from .policy import POLICY

JOB_STATE_KEY = "job_state"

KINDS: dict[str, ChangeKind] = {
    TargetKind.JOB: JOB,
    JOB_STATE_KEY: JOB_STATE,
    TargetKind.POLICY: POLICY,
    **{key: ConfigKind(spec) for key, spec in CONFIG_SPECS.items()},
}


def kind_key(change: ChangeRequest) -> str:
    if change.target_kind == TargetKind.JOB and change.action in STATE_ACTIONS:
        return JOB_STATE_KEY
    return change.target_kind


def kind_of(change: ChangeRequest) -> ChangeKind:
    return KINDS[kind_key(change)]


__all__ = ["JOB", "JOB_STATE", "KINDS", "POLICY", "ChangeError", "ChangeKind", "kind_key", "kind_of"]
