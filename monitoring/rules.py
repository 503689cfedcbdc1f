"""The alert-rule engine: which conditions hold now, for every job, in a fixed number of queries.

``evaluate(now)`` reads the rules (explicit ones and the defaults by criticality), the jobs and the
few run facts the kinds need, set-based (one query per fact, whatever the number of jobs), and
returns an ``Evaluation``: the signals that start firing now and the fingerprints that stop.

The ``for`` debounce and "has it fired" live in ``RuleState`` rows, one per condition that holds
(deleted when it no longer does), so the incidents stay free of engine bookkeeping and a restart of
the monitor neither re-fires nor forgets. A kind whose condition has a natural start (a run's
start, a slot's due time, a deadline) debounces from that instant; failure_rate, whose condition
has none, from the first cycle that saw it. The engine calls nothing outside monitoring: the loop
step (``monitoring.rule_step``) hands the signals to ``incidents.raise_alert`` and the clears to
``incidents.resolve_fingerprint``.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from django.db.models import Count, OuterRef, Q, Subquery, TextField
from django.db.models.functions import Cast

from jobs.models import HolidayCalendar, Job, JobStatus, Run, RunStatus

from .models import AlertRule, DurationSamples, RuleKind, RuleScope, RuleState, Severity
from .signals import AlertSignal

UTC = dt.UTC
FAILED = (RunStatus.FAILED, RunStatus.TIMED_OUT)
FINAL = (RunStatus.SUCCEEDED, *FAILED)
WAITING = (RunStatus.SCHEDULED, RunStatus.QUEUED)
# Kinds about the schedule: a paused job is expected not to run.
SCHEDULE_KINDS = frozenset(
    {RuleKind.LATE_START, RuleKind.DEADLINE_MISSED, RuleKind.DEADLINE_PREDICTED, RuleKind.HEARTBEAT_SILENCE}
)

# Built-in rules by job criticality (docs/monitoring.md, "Defaults by criticality"): a job covered by
# no explicit rule of a kind (enabled or not: disabling an explicit rule is how to opt out) gets these.
DEFAULT_RULES: dict[str, tuple[tuple[str, str, dict[str, Any]], ...]] = {
    "critical": (
        (RuleKind.RUN_FAILED, Severity.CRITICAL, {}),
        (RuleKind.LATE_START, Severity.HIGH, {"grace_seconds": 900}),
        (RuleKind.LONG_RUNNING, Severity.HIGH, {"k": 3.0, "samples": 20, "min_samples": 5}),
    ),
    "high": (
        (RuleKind.RUN_FAILED, Severity.HIGH, {}),
        (RuleKind.LATE_START, Severity.MEDIUM, {"grace_seconds": 1800}),
        (RuleKind.LONG_RUNNING, Severity.MEDIUM, {"k": 3.0, "samples": 20, "min_samples": 5}),
    ),
}


class Applied(NamedTuple):
    """One rule, explicit or default, as it applies to a job (built once per rule and cycle: a
    tuple, since 30,000 of them are made in a cycle)."""

    kind: str
    severity: str
    for_seconds: int
    params: dict[str, Any]
    rule_id: int | None = None
    name: str = ""
    enabled: bool = True
    scope: str = ""

    @property
    def is_default(self) -> bool:
        return self.rule_id is None

    def fingerprint(self, job_id: int) -> str:
        if self.rule_id is None:
            return f"default:{self.kind}:job:{job_id}"
        return f"rule:{self.rule_id}:job:{job_id}"


DEFAULT_APPLIED: dict[str, tuple[Applied, ...]] = {
    criticality: tuple(
        Applied(kind, severity, 0, params, name=f"default ({criticality})") for kind, severity, params in rows
    )
    for criticality, rows in DEFAULT_RULES.items()
}


@dataclass(frozen=True)
class Clear:
    """A condition that fired and no longer holds: its incident may resolve."""

    tenant_id: int
    job_id: int | None
    fingerprint: str
    reason: str


@dataclass
class Evaluation:
    signals: list[AlertSignal] = field(default_factory=list)
    clears: list[Clear] = field(default_factory=list)


@dataclass(frozen=True)
class Condition:
    """A rule's condition holds for a job; ``onset`` is when it began (None: the first cycle that saw it)."""

    onset: dt.datetime | None
    summary: str
    run_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


# --- which rules apply to which job ------------------------------------------------------------


class RuleRow(NamedTuple):
    """The columns of a rule the engine reads (one query, no model instances: 30,000 rules per cycle)."""

    id: int
    tenant_id: int
    environment_id: int | None
    name: str
    scope: str
    job_id: int | None
    team_id: int | None
    tag: str
    kind: str
    severity: str
    for_seconds: int
    params: dict[str, Any]
    enabled: bool


class RuleIndex:
    """The rules of some tenants, indexed by what they are scoped to, each as its ``Applied``."""

    def __init__(self, rules: Iterable[RuleRow]) -> None:
        self.by_job: dict[int, list[tuple[RuleRow, Applied]]] = defaultdict(list)
        self.by_team: dict[int, list[tuple[RuleRow, Applied]]] = defaultdict(list)
        self.by_tag: dict[tuple[int, str], list[tuple[RuleRow, Applied]]] = defaultdict(list)
        for rule in rules:
            entry = (
                rule,
                Applied(
                    rule.kind,
                    rule.severity,
                    rule.for_seconds,
                    rule.params,
                    rule.id,
                    rule.name,
                    rule.enabled,
                    rule.scope,
                ),
            )
            if rule.scope == RuleScope.JOB:
                self.by_job[rule.job_id].append(entry)  # type: ignore[index]
            elif rule.scope == RuleScope.TEAM:
                self.by_team[rule.team_id].append(entry)  # type: ignore[index]
            else:
                self.by_tag[(rule.tenant_id, rule.tag)].append(entry)

    def explicit(self, job: Any) -> list[Applied]:
        """The explicit rules (enabled or not) whose scope covers ``job`` (never another tenant's)."""
        tenant_id = job.tenant_id
        found = [applied for rule, applied in self.by_job.get(job.id, ()) if rule.tenant_id == tenant_id]
        candidates = list(self.by_team.get(job.team_id, ()))
        for tag in job.tags or ():
            candidates.extend(self.by_tag.get((tenant_id, tag), ()))
        found.extend(
            applied
            for rule, applied in candidates
            if rule.tenant_id == tenant_id and rule.environment_id in (None, job.environment_id)
        )
        return found

    def applied(self, job: Any) -> list[Applied]:
        """Every rule that applies to ``job``: its explicit rules, then the defaults of its criticality
        for the kinds no explicit rule covers. Disabled explicit rules are listed (``enabled`` False)."""
        result = self.explicit(job)
        defaults = DEFAULT_APPLIED.get(job.criticality, ())
        if defaults:
            covered = {r.kind for r in result}
            result.extend(d for d in defaults if d.kind not in covered)
        return result


def _as_text(field_name: str) -> Cast:
    return Cast(field_name, output_field=TextField())


def _decoder() -> Callable[[str | None], Any]:
    """json.loads, once per distinct text: thousands of rules and jobs share the same settings and tags."""
    return functools.lru_cache(maxsize=None)(lambda text: json.loads(text) if text else None)


def rule_rows(queryset: Any) -> list[RuleRow]:
    decode = _decoder()
    fields = [*RuleRow._fields]
    fields[fields.index("params")] = "params_text"
    rows = queryset.annotate(params_text=_as_text("params")).values_list(*fields)
    at = fields.index("params_text")
    return [RuleRow(*row[:at], decode(row[at]) or {}, *row[at + 1 :]) for row in rows]  # type: ignore[call-arg]


def rules_for_job(job: Job) -> list[Applied]:
    """The rules that apply to one job (the job page), explicit ones by kind and name first."""
    rules = AlertRule.objects.filter(tenant_id=job.tenant_id).filter(
        Q(job_id=job.pk) | Q(scope=RuleScope.TEAM, team_id=job.team_id) | Q(scope=RuleScope.TAG, tag__in=job.tags or [])
    )
    applied = RuleIndex(rule_rows(rules)).applied(job)
    return sorted(applied, key=lambda a: (a.is_default, a.kind, a.name))


# --- statistics and deadlines --------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def recent_percentile(samples: list[float] | None, params: dict, fraction: float) -> float | None:
    """The percentile of the last ``samples`` durations, None below ``min_samples`` of them."""
    recent = (samples or [])[: params.get("samples", 20)]
    if not recent or len(recent) < params.get("min_samples", 5):
        return None
    return percentile(recent, fraction)


def deadline_on(day: dt.date, params: dict) -> dt.datetime:
    """The deadline instant (UTC) of a local day. A time the clocks skip (spring forward) counts as the
    instant the wall clock would show it had they not moved (02:30 -> 03:30 summer time); a repeated
    time (autumn) as its first occurrence."""
    hours, minutes = (int(part) for part in params["time"].split(":"))
    local = dt.datetime.combine(day, dt.time(hours, minutes), tzinfo=ZoneInfo(params["timezone"]))
    return local.astimezone(UTC)


def is_deadline_day(day: dt.date, params: dict, holidays: frozenset[str]) -> bool:
    if params.get("days", "business") == "daily":
        return True
    return day.weekday() < 5 and day.isoformat() not in holidays


def last_deadline(now: dt.datetime, params: dict, holidays: frozenset[str]) -> dt.datetime | None:
    """The latest deadline at or before ``now`` (looking back two weeks at most)."""
    return _last_deadline(now, params["time"], params["timezone"], params.get("days", "business"), holidays)


@functools.lru_cache(maxsize=4096)
def _last_deadline(now: dt.datetime, time: str, zone: str, days: str, holidays: frozenset[str]) -> dt.datetime | None:
    # Cached: thousands of jobs share a deadline, and the zone arithmetic is the dear part.
    params = {"time": time, "timezone": zone, "days": days}
    today = now.astimezone(ZoneInfo(params["timezone"])).date()
    for back in range(15):
        day = today - dt.timedelta(days=back)
        instant = deadline_on(day, params)
        if instant <= now and is_deadline_day(day, params, holidays):
            return instant
    return None


def next_deadline(now: dt.datetime, params: dict, holidays: frozenset[str]) -> dt.datetime | None:
    """The first deadline after ``now`` (looking ahead two weeks at most)."""
    return _next_deadline(now, params["time"], params["timezone"], params.get("days", "business"), holidays)


@functools.lru_cache(maxsize=4096)
def _next_deadline(now: dt.datetime, time: str, zone: str, days: str, holidays: frozenset[str]) -> dt.datetime | None:
    params = {"time": time, "timezone": zone, "days": days}
    today = now.astimezone(ZoneInfo(params["timezone"])).date()
    for ahead in range(15):
        day = today + dt.timedelta(days=ahead)
        instant = deadline_on(day, params)
        if instant > now and is_deadline_day(day, params, holidays):
            return instant
    return None


def day_before(deadline: dt.datetime, params: dict) -> dt.datetime:
    """The same local time on the previous day: a run must succeed after it to meet ``deadline``."""
    return _day_before(deadline, params["time"], params["timezone"])


@functools.lru_cache(maxsize=4096)
def _day_before(deadline: dt.datetime, time: str, zone: str) -> dt.datetime:
    params = {"time": time, "timezone": zone}
    local_day = deadline.astimezone(ZoneInfo(params["timezone"])).date()
    return deadline_on(local_day - dt.timedelta(days=1), params)


# --- the facts of one cycle ----------------------------------------------------------------------


@dataclass
class Facts:
    """What the kinds read, loaded set-based: one query per fact for every job at once."""

    last_final: dict[int, dict] = field(default_factory=dict)  # job -> latest finished run
    last_success: dict[int, dt.datetime] = field(default_factory=dict)  # job -> its finish
    last_life: dict[int, dt.datetime] = field(default_factory=dict)  # job -> latest sign of life
    running: dict[int, dict] = field(default_factory=dict)  # job -> its oldest running run
    waiting: dict[int, dict] = field(default_factory=dict)  # job -> its oldest run not started
    samples: dict[int, list[float]] = field(default_factory=dict)  # job -> durations, newest first
    rates: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)  # (window, job) -> (failed, all)
    holidays: dict[tuple[int, str], frozenset[str]] = field(default_factory=dict)  # (tenant, calendar) -> dates


def _latest(jobs_q: Any, condition: Q) -> Subquery:
    """The id of each job's latest top-level run matching ``condition`` (index run_job_recent), for the
    jobs of the cycle (a queryset, not a list of ids: 10,000 parameters cost more than the lookups)."""
    latest = (
        Run.objects.filter(condition, job_id=OuterRef("pk"), parent__isnull=True)
        .order_by("-scheduled_for", "-id")
        .values("pk")[:1]
    )
    return Subquery(jobs_q.annotate(latest=latest).values("latest"))


def load_facts(now: dt.datetime, jobs_q: Any, jobs: list[Any], needs: dict[str, set[int]], windows: set[int]) -> Facts:
    facts = Facts()
    if needs[RuleKind.RUN_FAILED]:
        for row in Run.objects.filter(pk__in=_latest(jobs_q, Q(status__in=FINAL))).values(
            "pk", "job_id", "status", "finished_at"
        ):
            if row["job_id"] in needs[RuleKind.RUN_FAILED]:
                facts.last_final[row["job_id"]] = dict(row)
    deadline_jobs = needs[RuleKind.DEADLINE_MISSED] | needs[RuleKind.DEADLINE_PREDICTED]
    if deadline_jobs:
        for job_id, finished in Run.objects.filter(pk__in=_latest(jobs_q, Q(status=RunStatus.SUCCEEDED))).values_list(
            "job_id", "finished_at"
        ):
            if finished is not None and job_id in deadline_jobs:
                facts.last_success[job_id] = finished
    if needs[RuleKind.HEARTBEAT_SILENCE]:
        for life in Run.objects.filter(pk__in=_latest(jobs_q, Q())).values(
            "job_id", "scheduled_for", "started_at", "finished_at", "heartbeat_at"
        ):
            if life["job_id"] not in needs[RuleKind.HEARTBEAT_SILENCE]:
                continue
            seen = [v for v in (life["started_at"], life["finished_at"], life["heartbeat_at"]) if v is not None]
            facts.last_life[life["job_id"]] = max(seen) if seen else life["scheduled_for"]
    run_jobs = needs[RuleKind.LONG_RUNNING] | needs[RuleKind.DEADLINE_PREDICTED]
    if run_jobs:
        for active in (
            Run.objects.filter(status=RunStatus.RUNNING, parent__isnull=True, started_at__isnull=False)
            .order_by("started_at")
            .values("pk", "job_id", "started_at")
        ):
            if active["job_id"] in run_jobs:
                facts.running.setdefault(active["job_id"], dict(active))
        with_stats = [j for j in facts.running if j in run_jobs]
        if with_stats:
            facts.samples = dict(DurationSamples.objects.filter(job_id__in=with_stats).values_list("job_id", "seconds"))
    if needs[RuleKind.LATE_START]:
        for due in (
            Run.objects.filter(status__in=WAITING, parent__isnull=True, scheduled_for__lte=now)
            .order_by("scheduled_for")
            .values("pk", "job_id", "scheduled_for")
        ):
            facts.waiting.setdefault(due["job_id"], dict(due))
    for window in sorted(windows):
        ids = sorted(needs[RuleKind.FAILURE_RATE])
        rows = (
            Run.objects.filter(
                status__in=FINAL,
                parent__isnull=True,
                finished_at__gt=now - dt.timedelta(seconds=window),
                finished_at__lte=now,
            )
            .values("job_id")
            .annotate(total=Count("pk"), failed=Count("pk", filter=Q(status__in=FAILED)))
            .order_by()
        )
        wanted = set(ids)
        for count in rows:
            if count["job_id"] in wanted:
                facts.rates[(window, count["job_id"])] = (count["failed"], count["total"])
    calendars = {(j.tenant_id, j.holiday_calendar) for j in jobs if j.holiday_calendar and j.id in deadline_jobs}
    if calendars:
        tenants = {t for t, _ in calendars}
        for tenant_id, name, dates in HolidayCalendar.objects.filter(tenant_id__in=tenants).values_list(
            "tenant_id", "name", "dates"
        ):
            facts.holidays[(tenant_id, name)] = frozenset(dates or ())
    return facts


# --- the kinds -----------------------------------------------------------------------------------


def _at(instant: dt.datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def check(rule: Applied, job: Any, facts: Facts, now: dt.datetime) -> Condition | None:
    """Does ``rule``'s condition hold for ``job`` now?"""
    params = rule.params
    kind = rule.kind
    if kind in SCHEDULE_KINDS and job.status != JobStatus.ENABLED:
        return None
    if kind == RuleKind.RUN_FAILED:
        last = facts.last_final.get(job.id)
        if last is None or last["status"] not in FAILED or last["finished_at"] is None:
            return None
        return Condition(
            last["finished_at"],
            f"{job.name}: run #{last['pk']} {last['status'].replace('_', ' ')} (after retries).",
            run_id=last["pk"],
            details={"status": last["status"]},
        )
    if kind == RuleKind.LATE_START:
        grace = dt.timedelta(seconds=params.get("grace_seconds", 600))
        waiting = facts.waiting.get(job.id)
        due = waiting["scheduled_for"] if waiting else None
        if job.next_fire_at is not None and (due is None or job.next_fire_at < due):
            due = job.next_fire_at
        if due is None or now < due + grace:
            return None
        return Condition(
            due + grace,
            f"{job.name}: the run due at {_at(due)} has not started ({int(grace.total_seconds())} s grace).",
            run_id=waiting["pk"] if waiting and waiting["scheduled_for"] == due else None,
            details={"due": _at(due)},
        )
    if kind == RuleKind.LONG_RUNNING:
        run = facts.running.get(job.id)
        if run is None:
            return None
        if "seconds" in params:
            limit, how = float(params["seconds"]), f"{params['seconds']} s"
        else:
            p95 = recent_percentile(facts.samples.get(job.id), params, 0.95)
            if p95 is None:
                return None
            limit, how = params["k"] * p95, f"{params['k']:g} x p95 ({p95:.0f} s)"
        onset = run["started_at"] + dt.timedelta(seconds=limit)
        if now < onset:
            return None
        return Condition(
            onset,
            f"{job.name}: run #{run['pk']} has run {(now - run['started_at']).total_seconds():.0f} s, past {how}.",
            run_id=run["pk"],
            details={"limit_seconds": round(limit, 3)},
        )
    if kind == RuleKind.FAILURE_RATE:
        failed, total = facts.rates.get((params["window_seconds"], job.id), (0, 0))
        if total < params.get("min_runs", 5) or failed / total < params["threshold"]:
            return None
        return Condition(
            None,
            f"{job.name}: {failed} of {total} runs failed in the last {params['window_seconds']} s "
            f"(threshold {params['threshold']:.0%}).",
            details={"failed": failed, "runs": total},
        )
    if kind == RuleKind.DEADLINE_MISSED:
        holidays = facts.holidays.get((job.tenant_id, job.holiday_calendar), frozenset())
        deadline = last_deadline(now, params, holidays)
        if deadline is None:
            return None
        success = facts.last_success.get(job.id)
        if success is not None and success > day_before(deadline, params):
            return None
        return Condition(
            deadline,
            f"{job.name}: no successful run finished by {params['time']} {params['timezone']} ({_at(deadline)}).",
            details={"deadline": _at(deadline)},
        )
    if kind == RuleKind.DEADLINE_PREDICTED:
        run = facts.running.get(job.id)
        if run is None:
            return None
        holidays = facts.holidays.get((job.tenant_id, job.holiday_calendar), frozenset())
        deadline = next_deadline(now, params, holidays)
        p90 = recent_percentile(facts.samples.get(job.id), params, 0.90)
        if deadline is None or p90 is None:
            return None
        opened = day_before(deadline, params)
        success = facts.last_success.get(job.id)
        if run["started_at"] <= opened or (success is not None and success > opened):
            return None  # a run of an earlier day, or today's deadline is already met
        predicted = run["started_at"] + dt.timedelta(seconds=p90)
        if predicted <= deadline:
            return None
        return Condition(
            run["started_at"],
            f"{job.name}: run #{run['pk']} is predicted to finish at {_at(predicted)} (start + p90 {p90:.0f} s), "
            f"after the deadline {params['time']} {params['timezone']} ({_at(deadline)}).",
            run_id=run["pk"],
            details={"deadline": _at(deadline), "predicted": _at(predicted)},
        )
    if kind == RuleKind.HEARTBEAT_SILENCE:
        seen = facts.last_life.get(job.id)
        if seen is None:
            return None
        onset = seen + dt.timedelta(seconds=params["seconds"])
        if now < onset:
            return None
        return Condition(onset, f"{job.name}: no sign of life since {_at(seen)} ({params['seconds']} s silence).")
    return None


# --- one cycle -----------------------------------------------------------------------------------


class JobRow(NamedTuple):
    """The columns of a job the engine reads (one query for every job)."""

    id: int
    tenant_id: int
    team_id: int
    environment_id: int
    name: str
    criticality: str
    tags: list[str]
    status: str
    next_fire_at: dt.datetime | None
    holiday_calendar: str


def evaluate(
    now: dt.datetime, *, job_ids: Iterable[int] | None = None, kinds: Iterable[str] | None = None
) -> Evaluation:
    """One evaluation cycle at ``now``: record which conditions hold (``RuleState``) and return the
    signals that fire now and the fingerprints that stopped holding.

    ``job_ids``/``kinds`` narrow the cycle (a finished run re-checks its own job's run_failed rules at
    once); states outside that view are left alone."""
    # A cycle makes about ten small tuples per job and none of them in a cycle: the cyclic collector
    # would walk the growing heap again and again (measured: half the cycle with 10,000 jobs).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _evaluate(now, job_ids=job_ids, kinds=kinds)
    finally:
        if collecting:
            gc.enable()


def _evaluate(now: dt.datetime, *, job_ids: Iterable[int] | None, kinds: Iterable[str] | None) -> Evaluation:
    kinds = set(kinds) if kinds is not None else set(RuleKind.values)
    # No ordering: the rows are read whole, and the subqueries of load_facts need none.
    jobs_q = Job.objects.exclude(status=JobStatus.DELETED).order_by()
    rules_q = AlertRule.objects.order_by()
    if job_ids is not None:
        wanted = sorted(set(job_ids))
        jobs_q = jobs_q.filter(pk__in=wanted)
    decode = _decoder()
    fields = [*JobRow._fields]
    fields[fields.index("tags")] = "tags_text"
    at = fields.index("tags_text")
    jobs = [
        JobRow(*row[:at], decode(row[at]) or [], *row[at + 1 :])  # type: ignore[call-arg]
        for row in jobs_q.annotate(tags_text=_as_text("tags")).values_list(*fields)
    ]
    if job_ids is not None:
        rules_q = rules_q.filter(tenant_id__in={j.tenant_id for j in jobs})
    index = RuleIndex(rule_rows(rules_q))

    plan: list[tuple[JobRow, Applied]] = []
    needs: dict[str, set[int]] = {kind: set() for kind in RuleKind.values}
    windows: set[int] = set()
    for job in jobs:
        for rule in index.applied(job):
            if not rule.enabled or rule.kind not in kinds:
                continue
            if rule.kind in SCHEDULE_KINDS and job.status != JobStatus.ENABLED:
                continue
            plan.append((job, rule))
            needs[rule.kind].add(job.id)
            if rule.kind == RuleKind.FAILURE_RATE:
                windows.add(rule.params["window_seconds"])
    facts = load_facts(now, jobs_q, jobs, needs, windows)

    holding: dict[tuple[int, str], tuple[JobRow, Applied, Condition]] = {}
    for job, rule in plan:
        condition = check(rule, job, facts, now)
        if condition is not None:
            holding[(job.tenant_id, rule.fingerprint(job.id))] = (job, rule, condition)
    return _settle(now, holding, narrowed=job_ids is not None or kinds != set(RuleKind.values), plan=plan)


def _settle(
    now: dt.datetime,
    holding: dict[tuple[int, str], tuple[JobRow, Applied, Condition]],
    *,
    narrowed: bool,
    plan: list[tuple[JobRow, Applied]],
) -> Evaluation:
    """Debounce against the stored states; write the changes (at most three statements)."""
    states_q = RuleState.objects.all()
    if narrowed:
        in_view = {rule.fingerprint(job.id) for job, rule in plan}
        states_q = states_q.filter(fingerprint__in=sorted(in_view))
    states = {(s.tenant_id, s.fingerprint): s for s in states_q}
    result = Evaluation()
    created: list[RuleState] = []
    fired: list[RuleState] = []
    for key, (job, rule, condition) in holding.items():
        state = states.get(key)
        if state is None:
            state = RuleState(tenant_id=key[0], fingerprint=key[1], since=now)
            created.append(state)
        onset = condition.onset or state.since
        if state.fired_at is not None or now < onset + dt.timedelta(seconds=rule.for_seconds):
            continue
        state.fired_at = now
        if state.pk is not None:
            fired.append(state)
        result.signals.append(
            AlertSignal(
                tenant_id=job.tenant_id,
                job_id=job.id,
                kind=rule.kind,
                severity=rule.severity,
                fingerprint=key[1],
                summary=condition.summary,
                at=now,
                rule_id=rule.rule_id,
                run_id=condition.run_id,
                details={"rule": rule.name, "default": rule.is_default, "since": _at(onset), **condition.details},
            )
        )
    gone = [state for key, state in states.items() if key not in holding]
    for state in gone:
        if state.fired_at is not None:
            job_part = state.fingerprint.rsplit(":job:", 1)
            job_id = int(job_part[1]) if len(job_part) == 2 and job_part[1].isdigit() else None
            result.clears.append(Clear(state.tenant_id, job_id, state.fingerprint, "The condition no longer holds."))
    if created:
        RuleState.objects.bulk_create(created, ignore_conflicts=True)
    if fired:
        RuleState.objects.bulk_update(fired, ["fired_at"])
    if gone:
        RuleState.objects.filter(pk__in=[s.pk for s in gone]).delete()
    return result
